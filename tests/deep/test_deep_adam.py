import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from learners.deep.adam import Adam
from learners.deep.model import CandidateRanker, listwise_loss

REPO = Path(__file__).resolve().parents[2]


def _train(make_optimizer, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = CandidateRanker(6, hidden=(8, 4))
    x, label = torch.randn(64, 5, 6), torch.randint(0, 5, (64,))
    optimizer = make_optimizer(model.parameters())
    for _ in range(steps):
        loss = listwise_loss(model(x), label, torch.full((64,), 5))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_steps_match_torch_adam_with_and_without_weight_decay():
    untrained = _train(functools.partial(Adam, lr=0.0))
    for decay in (0.0, 1e-2):
        ours = _train(functools.partial(Adam, lr=1e-2, weight_decay=decay))
        reference = _train(functools.partial(torch.optim.Adam, lr=1e-2, weight_decay=decay, foreach=False))
        for a, b in zip(ours, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert any((a != u).any() for a, u in zip(ours, untrained, strict=True))


def test_a_fine_tune_round_does_not_import_torch_dynamo():
    code = textwrap.dedent("""
        import sys, numpy as np
        from learners.deep.finetune import WindowedFineTuner, sample_fields
        from learners.deep.model import CandidateRanker
        from learners.deep.window import SlidingWindow
        w = SlidingWindow(500, sample_fields(4, 3))
        x = np.random.default_rng(0).normal(size=(300, 4, 3)).astype(np.float32)
        w.append(np.arange(300), np.zeros(300), features=x, label=x[:, :, 0].argmax(1),
                 n_valid=np.full(300, 4))
        t = WindowedFineTuner(lambda: CandidateRanker(3, hidden=(8,)), w, every_events=100,
                              background=False, fixed_cost_s=0.0, min_samples=50)
        t.tick(300)
        assert t.rounds, "no round ran"
        print("torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
