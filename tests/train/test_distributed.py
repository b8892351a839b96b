"""FSDP2 sharding under bf16 (two gloo ranks): blocks compute in bf16, MoE routers in fp32."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, torch
from frugal_lm.config import load_model_config
from frugal_lm.model import AttentionLayout, build_model
from frugal_lm.model.moe import Router
from frugal_lm.train.distributed import init_distributed, shard_model

distributed = init_distributed("cpu")
config = load_model_config("tiny", "hrm", vocab_size=256, moe={"experts": 4, "top_k": 2, "intermediate_size": 32})
torch.manual_seed(0)
model = shard_model(build_model(config), bf16=True)
seen = {}
for name, module in model.named_modules():
    if isinstance(module, Router):
        module.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, str(m.weight.dtype)) and None)
q_proj = model.H_module.layers[0].self_attn.q_proj
q_proj.register_forward_pre_hook(lambda m, args: seen.setdefault("q_proj", str(m.weight.dtype)) and None)
ids = torch.randint(0, 256, (2, 8))
layout = AttentionLayout(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.bool))
model(ids, torch.arange(8).expand(2, 8), layout).float().sum().backward()
if distributed.is_main:
    print(json.dumps(seen))
"""


def test_routers_keep_fp32_weights_under_bf16_sharding(tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen.pop("q_proj") == "torch.bfloat16"
    assert seen and set(seen.values()) == {"torch.float32"}, seen
