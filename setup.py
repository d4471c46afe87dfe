"""openaff: Attentional Feature Fusion (Dai et al., WACV 2021) on MXNet/Gluon."""
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

# mxnet 1.9.1 uses np.bool (gone in numpy 1.24); gluoncv 0.10.5 on Python 3.11 then needs the
# last scipy/pandas/matplotlib/contourpy releases that still accept that numpy.
STACK = [
    'numpy>=1.20,<1.24',
    'scipy<1.11',
    'pandas<2.1',
    'matplotlib<3.9',
    'contourpy<1.3',
    'gluoncv==0.10.5.post0',
    'opencv-python<4.12',  # 4.12+ needs numpy 2
    'filelock>=3.0',
    'tqdm>=4.0',
    'Pillow>=8.0',
    'scikit-learn>=1.0,<1.8',
]

setup(
    name='openaff',
    version='0.1.0',
    description='Attentional Feature Fusion (AFF/iAFF/MS-CAM) for MXNet/Gluon: fusion blocks, '
                'model zoo, released checkpoints, training scripts',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    python_requires='>=3.8,<3.12',
    packages=find_packages(include=['openaff', 'openaff.*']),
    # the native operators are compiled on first use from this source (openaff/ops)
    package_data={'openaff.ops': ['*.cc', '*.h', '*.map']},
    install_requires=STACK,
    extras_require={
        'cpu': ['mxnet==1.9.1'],
        'cu112': ['mxnet-cu112==1.9.1'],
        # the pair that works with numpy<1.24 on Python 3.11 (onnx 1.17+ wants a newer numpy,
        # onnxruntime 1.15-1.17 wheels numpy>=1.24.2)
        'onnx': ['onnx>=1.13,<1.17', 'onnxruntime==1.18.1'],
        'test': ['pytest>=7', 'onnx>=1.13,<1.17', 'onnxruntime==1.18.1'],
        # build it against mxnet with tools/install_horovod.sh (pip's isolated build cannot
        # see mxnet and would leave horovod.mxnet out); this extra then finds it installed
        'horovod': ['horovod==0.28.1'],
    },
    # one console script per command (openaff/cli/), besides python -m openaff.X and the
    # top-level train_cifar.py / train_imagenet.py of the original
    entry_points={'console_scripts': [
        f"openaff-{module.replace('_', '-')}=openaff.cli.{module}:main" for module in (
            'train_cifar', 'train_imagenet', 'train_segmentation', 'evaluate', 'summary',
            'benchmark', 'compare', 'plotlog', 'launch', 'ops', 'export', 'cam')]},
    classifiers=[
        'Programming Language :: Python :: 3.11',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
