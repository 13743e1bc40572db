"""The sub-pixel forms subpixel_layers.py measures equal conv_transpose2d (values and gradients)."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subpixel_forms import conv_transpose_as_phase_convs, conv_transpose_as_window_conv  # noqa: E402

CASES = [  # (cin, cout, k, stride, padding, output_padding, groups, h, w)
    (4, 6, 4, 2, 1, 0, 1, 5, 7), (5, 8, 4, 1, 0, 0, 1, 1, 1), (4, 6, 3, 2, 1, 1, 2, 6, 6), (6, 6, 3, 3, 0, 2, 3, 4, 5),
    (3, 4, 1, 2, 0, 1, 1, 3, 3), (2, 3, 3, 1, 2, 0, 1, 5, 5), (3, 3, (128, 1), (32, 1), 0, 0, 3, 3, 2),
]


@pytest.mark.parametrize("form", [conv_transpose_as_phase_convs, conv_transpose_as_window_conv])
@pytest.mark.parametrize("cin,cout,k,stride,padding,output_padding,groups,h,w", CASES)
def test_form_matches_conv_transpose(form, cin, cout, k, stride, padding, output_padding, groups, h, w):
    g = torch.Generator().manual_seed(cin * 13 + h)
    kk = k if isinstance(k, tuple) else (k, k)
    x = torch.randn(2, cin, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(cin, cout // groups, *kk, generator=g, dtype=torch.float64)
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    ref = F.conv_transpose2d(x, wt, b, stride, padding, output_padding, groups)
    out = form(x, wt, b, stride, padding, output_padding, groups)
    torch.testing.assert_close(out, ref)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(out, x, gy)[0], torch.autograd.grad(ref, x, gy)[0])
