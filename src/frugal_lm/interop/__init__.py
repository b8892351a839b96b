"""Interop with transformers' native `hrm_text` model (HrmTextConfig / HrmTextForCausalLM).

`export_hf` writes one of our HRM models as a directory `AutoModelForCausalLM` /
`AutoTokenizer` load; `import_hf` turns such a directory (released weights, or one we
exported) into one of our checkpoints that trains, fine-tunes (`init_from=`) and serves;
`read_hf_model` is what `--model DIR` uses on a transformers directory.

Design choices: no transformers import anywhere here (the format is JSON + safetensors +
a tokenizers file), so the `hf` extra is needed only to run the model with transformers,
and the tests compare against transformers as an independent reference. Never pickle.
Layer: interop sits above train (it reads run directories through the train layer's
helpers) and below infer.
"""

from frugal_lm.interop.export import ExportResult, export_hf
from frugal_lm.interop.hf_config import from_hf_config, to_hf_config
from frugal_lm.interop.import_ import HFModel, ImportResult, import_hf, is_hf_model_directory, read_hf_model

__all__ = [
    "ExportResult",
    "HFModel",
    "ImportResult",
    "export_hf",
    "from_hf_config",
    "import_hf",
    "is_hf_model_directory",
    "read_hf_model",
    "to_hf_config",
]
