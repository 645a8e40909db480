"""The weight matrices of one-token steps on the CPU at fp32, bf16 or int8 (`sample.precision`).

Writing one text at a time reads every recurrent and output weight once per token, so a step
takes at least the time the machine needs to read them: fewer bytes per weight, faster steps.
Each matrix W (G x I) with its bias b becomes an `Affine`: rows (B, I) -> rows W^T + b (B, G),
in float32 whatever the weights are stored as, so the cell arithmetic around it stays float32.

- fp32: the weights as trained. A large matrix goes to oneDNN, packed once in its layout (where
  torch has oneDNN; its CPU builds do): on this project's AMD CPU 2.6-4x faster than MKL's gemm for
  3-64 rows of a 2x512 LSTM (MKL does not use AVX-512 there), and for one row, inside a whole step
  on a busy machine, 1.3-2x faster than MKL's gemv, which swings widely. A small matrix (a char
  model's output layer) stays with BLAS: oneDNN's call costs some 15 us more than such a product.
- bf16: the weights rounded to bfloat16 (half the bytes), multiplied by oneDNN with the weights
  packed once in its own layout; only where the CPU has bf16 instructions (AVX-512 BF16 or AMX on
  x86). The products come back as bf16 (8 significant bits) and are widened to float32.
- int8: symmetric int8 weights with one scale per row (max |W_row| / 127; a quarter of the
  bytes), multiplied by PyTorch's own dynamically quantized linear (fbgemm on x86, qnnpack on
  ARM), which quantizes each call's rows to 8 bits on the fly and accumulates in int32.
The conversion is done once, when the stepper is built (rnngen.models.cpu_single_step).
"""

from __future__ import annotations

import platform
import warnings

import torch

from rnngen.errors import UserError

# Smaller matrices stay fp32 and with BLAS: the fixed cost of a oneDNN or fbgemm call (and of converting or
# quantizing its rows) is more than reading fewer bytes saves (a char model's output layer, say).
MIN_CONVERTED_WEIGHTS = 1 << 16


def bf16_supported() -> bool:
    """Whether this CPU multiplies bf16 in hardware and oneDNN can run it."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):  # oneDNN also emulates bf16 on AVX-512
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse, with the fix, a precision this machine or device cannot run."""
    if precision == "fp32":
        return
    if device.type != "cpu":
        raise UserError(
            f"sample.precision {precision} applies to sampling on the CPU (this model runs on {device.type}); "
            "add --device cpu or use --precision fp32"
        )
    if precision == "bf16" and not bf16_supported():
        raise UserError(
            "sample.precision bf16 needs a CPU with bf16 instructions (AVX-512 BF16 or AMX), which this one lacks; "
            "use --precision int8 (a quarter of the bytes) or fp32"
        )


class Affine:
    """rows (B, I) -> rows W^T + b (B, G) in float32, from weights stored at fp32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight.contiguous(), bias.contiguous()
        self.column_bias = self.bias[:, None]  # (G, 1) for the several-rows form
        self.packed = _onednn_packed(self.weight) if self.weight.numel() >= MIN_CONVERTED_WEIGHTS else None
        self.nbytes = self.weight.numel() * 4 + self.bias.numel() * 4

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        if rows.size(0) == 1:  # one sample: a matrix-vector product
            return torch.addmv(self.bias, self.weight, rows[0]).unsqueeze(0)
        # W times the rows as columns: BLAS packs its right-hand operand, and the few columns cost little to pack
        return torch.addmm(self.column_bias, self.weight, rows.t()).t()


def _onednn_packed(weight: torch.Tensor) -> torch.Tensor | None:
    """The weights in oneDNN's own layout (good for any number of rows), or None in a torch without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight, 32)  # laid out for batches; any size works


class Bf16Affine:
    """The same product with bf16 weights, packed once for oneDNN."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        weight, self.bias = weight.to(torch.bfloat16).contiguous(), bias.to(torch.bfloat16)
        self.packed = _onednn_packed(weight)  # bf16_supported() has made sure oneDNN is there
        self.nbytes = weight.numel() * 2 + self.bias.numel() * 2

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        out = torch.ops.mkldnn._linear_pointwise(rows.to(torch.bfloat16), self.packed, self.bias, "none", [], "")
        return out.float()


class Int8Affine:
    """The same product with int8 weights and one float scale per row, in PyTorch's quantized linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()  # (G,) one per row
        zero_points = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():  # torch >= 2.10 warns that quantized tensor types are on their way out
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(quantized, bias.contiguous())
        # fbgemm's kernels can saturate a 16-bit sum of products unless the rows are quantized to 7 bits
        self.reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")
        self.nbytes = weight.numel() + weight.size(0) * 4 + bias.numel() * 4

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(rows, self.packed, self.reduce_range)


AFFINES = {"fp32": Affine, "bf16": Bf16Affine, "int8": Int8Affine}


def affine(weight: torch.Tensor, bias: torch.Tensor, precision: str):
    """An Affine of W (G x I) and b (G,) at the given precision (fp32 if W is small)."""
    kind = AFFINES[precision] if weight.numel() >= MIN_CONVERTED_WEIGHTS else Affine
    return kind(weight.detach(), bias.detach())
