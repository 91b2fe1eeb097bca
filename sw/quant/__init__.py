"""Weight and activation quantizers for BinaryBERT / BiBERT.

Three layers, as in torchao / Brevitas, one module each:

1. :mod:`sw.quant.functions`: pure functions on tensors (``twn_quantize``, ``bwn_quantize``,
   ``lsq_codes``, ``sign``, ...), with the conventions shared with the hardware;
2. :mod:`sw.quant.ste`: tiny ``torch.autograd.Function`` straight-through estimators on them;
3. :mod:`sw.quant.config` (frozen config dataclasses) and :mod:`sw.quant.modules` (the
   ``nn.Module`` quantizers built from them, and the ``QuantLinear`` / ``QuantEmbedding`` layers).

Argument checks come from :mod:`hw.validate`. This package re-exports the
public names for callers outside ``sw``; modules inside ``sw`` import from the defining module.
"""
from sw.quant.config import (ACT_METHODS, WEIGHT_METHODS, ActQuantConfig, WeightQuantConfig,
                             config_dict)
from sw.quant.functions import (MAX_ACT_BITS, MIN_ACT_BITS, ROUNDINGS, TWN_THRESHOLD, bwn_center, bwn_codes, bwn_params,
                                bwn_quantize, heaviside, lsq_codes, lsq_quantize, qrange,
                                round_by, row_dims, sign, sign_codes, twn_codes, twn_params,
                                twn_quantize, uniform_codes, uniform_quantize, uniform_step)
from sw.quant.modules import (ActQuantizer, QuantEmbedding, QuantLinear, WeightQuantizer,
                              act_quant_is_shared, share_act_quant)
from sw.quant.ste import BWNSTE, LSQSTE, TWNSTE, HeavisideSTE, SignSTE, UniformSTE

__all__ = [
    "ACT_METHODS", "WEIGHT_METHODS", "ActQuantConfig", "WeightQuantConfig", "config_dict",
    "ROUNDINGS", "TWN_THRESHOLD", "bwn_center", "bwn_codes", "bwn_params", "bwn_quantize",
    "heaviside", "lsq_codes", "lsq_quantize", "qrange", "round_by", "row_dims", "sign",
    "sign_codes", "twn_codes", "twn_params", "twn_quantize", "uniform_codes", "uniform_quantize",
    "uniform_step",
    "ActQuantizer", "QuantEmbedding", "QuantLinear", "WeightQuantizer", "act_quant_is_shared",
    "share_act_quant",
    "BWNSTE", "LSQSTE", "TWNSTE", "HeavisideSTE", "SignSTE", "UniformSTE",
    "MAX_ACT_BITS", "MIN_ACT_BITS",
]
