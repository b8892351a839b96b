import importlib.util
import json

import pytest

from frugal_lm.errors import FrugalError
from frugal_lm.train.loggers import MetricsLogger, check_available


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_asking_for_a_missing_sink_names_the_install_command():
    with pytest.raises(FrugalError, match="pip install wandb"):
        check_available(["wandb"])


def test_jsonl_is_always_written(tmp_path):
    logger = MetricsLogger(tmp_path, [], {}, resume=False)
    logger.log({"step": 1, "loss": 2.5})
    logger.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.5}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard extra not installed")
def test_tensorboard_mirror(tmp_path):
    logger = MetricsLogger(tmp_path, ["tensorboard"], {}, resume=False)
    logger.log({"step": 1, "loss": 2.5})
    logger.close()
    assert any((tmp_path / "tensorboard").iterdir())
