import pytest


@pytest.fixture
def engine_constructions(monkeypatch):
    """Records (model precision: fp32, bf16 or int8; `compile` asked for) of every Engine a command builds, and
    builds it uncompiled: the compiled step itself is tested in tests/infer (slow, and on
    a GPU); the CLI tests only check what a flag asks for."""
    import frugal_lm.infer.engine as engine_module

    seen = []
    original = engine_module.Engine.__init__

    def recording_init(self, loaded, *args, **kwargs):
        seen.append((loaded.precision, kwargs.get("compile", False)))
        original(self, loaded, *args, **{**kwargs, "compile": False, "cuda_graphs": None})

    monkeypatch.setattr(engine_module.Engine, "__init__", recording_init)
    return seen
