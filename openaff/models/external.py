"""Networks from other model zoos, trained with exactly the same recipe as the AFF networks."""

GLUONCV_PREFIX = 'gluoncv:'


def gluoncv_net(name, classes, **kwargs):
    """An uninitialised GluonCV model-zoo network (``cifar_resnet56_v2``, ``resnet50_v1d``...)."""
    from gluoncv.model_zoo import get_model, get_model_list
    if name not in get_model_list():
        raise ValueError(f'unknown GluonCV model {name!r}; gluoncv.model_zoo.get_model_list() '
                         f'lists the valid names')
    return get_model(name, classes=classes, **kwargs)


def gluoncv_spec(model, classes):
    """``'gluoncv:NAME'`` -> (builder, its arguments, run name) as the scripts record them."""
    name = model[len(GLUONCV_PREFIX):]
    gluoncv_net(name, classes)  # fail early, with the message, on an unknown name
    return gluoncv_net, {'name': name, 'classes': classes}, name
