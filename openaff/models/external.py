"""Networks from other model zoos, trained with exactly the same recipe as the AFF networks."""
from .registry import display_name, gluoncv_entry, gluoncv_name, register_network

__all__ = ['gluoncv_net', 'gluoncv_spec', 'check_gluoncv_name', 'gluoncv_name', 'gluoncv_entry',
           'display_name']


@register_network
def gluoncv_net(name, classes, **kwargs):
    """An uninitialised GluonCV model-zoo network (``cifar_resnet56_v2``, ``resnet50_v1d``...)."""
    from gluoncv.model_zoo import get_model
    check_gluoncv_name(name)
    return get_model(name, classes=classes, **kwargs)


def check_gluoncv_name(name):
    """``ValueError`` unless ``name`` is in GluonCV's model zoo (which lowercases names)."""
    from gluoncv.model_zoo import get_model_list
    if name.lower() not in get_model_list():
        raise ValueError(f'unknown GluonCV model {name!r}; gluoncv.model_zoo.get_model_list() '
                         f'lists the valid names')


def gluoncv_spec(model, classes):
    """``'gluoncv:NAME'`` -> (builder, its arguments, run name) as the scripts record them."""
    name = gluoncv_name(model)
    gluoncv_net(name, classes)  # fail early, with the message, on an unknown name
    return gluoncv_net, {'name': name, 'classes': classes}, name
