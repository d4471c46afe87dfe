"""A numpy that breaks mxnet 1.9.1 is refused with the fix in the message."""
import pytest

from openaff._stack import check_stack


@pytest.mark.parametrize('version', ['1.24.0', '1.26.4', '2.0.0rc1', '2.4.6'])
def test_too_new_numpy_is_refused_with_the_fix(version):
    with pytest.raises(ImportError, match=r'pip install "numpy<1.24"'):
        check_stack(version)


@pytest.mark.parametrize('version', ['1.23.5', '1.21.0'])
def test_supported_numpy_passes(version):
    assert check_stack(version) is None
