"""The GPU speed switches are wired (checked on the CPU): channels-last weights and inputs, torch.compile, and
the recipe options turned off when a run lands on a CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recipes.config_edits import cpu_fallbacks
from zoo import ImageClassifier
from zoo.runtime.accelerate import compile_module, runs_on_cpu

SMALL = {"widths": [8, 16], "depth": 1}


def conv_weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_channels_last_stores_conv_weights_and_inputs_nhwc_with_the_same_outputs():
    torch.manual_seed(0)
    plain = ImageClassifier("convnet", num_classes=5, model_kwargs=SMALL).eval()
    fast = ImageClassifier("convnet", num_classes=5, model_kwargs=SMALL, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())  # copies values, keeps the memory order
    weights = conv_weights(fast)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not any(w.is_contiguous() for w in weights if w.shape[1] > 1 and w.shape[-1] > 1)
    assert all(w.is_contiguous() for w in conv_weights(plain))
    seen = []
    first_conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_compile_runs_the_network_through_torch_compile_and_keeps_checkpoint_keys():
    graphs = []

    def backend(gm: torch.fx.GraphModule, example_inputs):  # a torch.compile backend that records its graphs
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    plain = ImageClassifier("convnet", num_classes=5, model_kwargs=SMALL).eval()
    compiled = ImageClassifier(
        "convnet", num_classes=5, model_kwargs=SMALL, compile=True, compile_options={"backend": backend}
    ).eval()
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no "_orig_mod." prefix
    compiled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(compiled(x), plain(x))
    # the backend was handed the network's graph: its convolutions ran through torch.compile
    assert graphs and any("conv2d" in str(n.target) for g in graphs for n in g.graph.nodes)


def test_unknown_compile_option_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"compile_options has unknown key\(s\) mood"):
        compile_module(nn.Linear(2, 2), {"mood": "fast"})


def test_sync_batchnorm_is_turned_off_on_cpu_only():
    trainer = {"accelerator": "cpu", "sync_batchnorm": True, "precision": "bf16-mixed"}
    with pytest.warns(UserWarning, match=r"trainer.sync_batchnorm: true → false: torch's SyncBatchNorm"):
        changes = cpu_fallbacks(trainer)
    assert len(changes) == 1
    assert trainer == {"accelerator": "cpu", "sync_batchnorm": False, "precision": "bf16-mixed"}
    on_gpu = {"accelerator": "gpu", "sync_batchnorm": True}
    assert cpu_fallbacks(on_gpu) == [] and on_gpu["sync_batchnorm"] is True
    assert runs_on_cpu("auto") == (not torch.cuda.is_available() and not torch.backends.mps.is_available())
