"""The clinical note model: a base causal LM, LoRA fine-tuning with checkpoints and (where Opacus
supports the model) DP-SGD, and greedy generation.  No Temporal here.

On a CPU machine the base is built here: a byte-level BPE tokenizer trained on a general clinical
corpus and a small Llama-shaped model trained on it (free text, no SOAP sections and no prompts: it
knows the language, not the task).  `CAREFLOW_FINETUNE_BASE_MODEL` points at any other causal LM
folder (an 8B instruct model on `careflow-gpu` workers); nothing else changes.

Training is step-based and resumable: every `checkpoint_every` steps the adapter, the optimizer and
the privacy accountant go to `on_checkpoint` as one blob, and `finetune(resume=blob)` continues from
that step.  The loss is each example's mean over its note's tokens (the prompt is masked), averaged
over the batch, so Opacus clips and noises true per-example gradients.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from careflow.finetune.prep import Example

PAD, END = "<|pad|>", "<|end|>"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class BaseConfig:
    vocab_size: int = 2048
    hidden: int = 192
    layers: int = 3
    heads: int = 4
    intermediate: int = 384
    max_tokens: int = 512
    steps: int = 800
    batch: int = 8
    lr: float = 3e-3
    seed: int = 7


@dataclass(frozen=True)
class TrainConfig:
    # Measured on the synthetic export (150 patients) with DP at epsilon 8: 5 epochs of 16 reach
    # ROUGE-L 0.40 and SOAP sections 51 % (base 0.20 / 14 %); larger batches or rates did worse.
    epochs: int = 5
    batch: int = 16
    lr: float = 3e-3
    rank: int = 8
    alpha: int = 16
    target_epsilon: float | None = 8.0  # None: no differential privacy
    max_grad_norm: float = 1.0
    checkpoint_every: int = 20
    seed: int = 7


@dataclass
class TrainResult:
    adapter: bytes  # the LoRA weights (torch.save of peft's state dict)
    steps: int
    loss: float
    seconds: float
    epsilon: float | None  # spent, at delta; None without DP
    delta: float | None
    privacy: str  # "dp-sgd (opacus, rdp)" or why not
    losses: list[float] = field(default_factory=list)


def _torch() -> Any:
    import torch  # seconds to import: only where a model runs

    return torch


# -- the base -------------------------------------------------------------------------------------
def build_base(
    texts: Sequence[str], out: Path, cfg: BaseConfig, on_step: Callable[[int, int, float], None] | None = None
) -> Path:
    """Train a tokenizer and a small Llama-shaped LM on `texts`; save both under `out`."""
    torch = _torch()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(cfg.seed)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        list(texts),
        trainers.BpeTrainer(
            vocab_size=cfg.vocab_size, special_tokens=[PAD, END],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )  # fmt: skip
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, eos_token=END, bos_token=END)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
            max_position_embeddings=cfg.max_tokens, tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
        )
    )  # fmt: skip
    rows = [tok(t + END, truncation=True, max_length=cfg.max_tokens)["input_ids"] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(1, cfg.steps + 1):
        pick = torch.randint(len(rows), (cfg.batch,), generator=gen).tolist()
        ids, labels = _batch([rows[i] for i in pick], [0] * len(pick), tok.pad_token_id)
        loss = _loss(model, ids, labels).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if on_step:
            on_step(step, cfg.steps, float(loss.detach()))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


GENERAL_CORPUS = (99, 100)  # (seed, patients) of the export the local base learns language from


def ensure_base(
    path: Path, cfg: BaseConfig = BaseConfig(), on_step: Callable[[int, int, float], None] | None = None
) -> Path:
    """The base at `path`, built there first if it is not (into a side folder, then renamed: a killed
    build leaves nothing half-written where a later run would load it)."""
    import shutil

    from careflow.finetune.export import general_corpus

    if (path / "config.json").exists():
        return path
    side = path.with_name(path.name + ".building")
    shutil.rmtree(side, ignore_errors=True)
    build_base(general_corpus(*GENERAL_CORPUS), side, cfg, on_step)
    side.rename(path)
    return path


def load(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, tok


# -- batches and the loss -------------------------------------------------------------------------
def _batch(rows: Sequence[list[int]], prompt_lengths: Sequence[int], pad: int) -> tuple[Any, Any]:
    """Right-padded ids and labels (-100 on the prompt and the padding)."""
    torch = _torch()
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, p) in enumerate(zip(rows, prompt_lengths, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, p : len(r)] = torch.tensor(r[p:])
    return ids, labels


def _loss(model: Any, ids: Any, labels: Any) -> Any:
    """Each example's mean token loss (a vector over the batch)."""
    torch = _torch()
    logits = model(input_ids=ids).logits[:, :-1]  # right padding under a causal mask: no mask needed
    target = labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none"
    ).view(target.shape)
    counted = (target != -100).sum(dim=1).clamp(min=1)
    return per_token.sum(dim=1) / counted


def encode(
    tok: PreTrainedTokenizerFast, examples: Sequence[Example], max_tokens: int
) -> list[tuple[list[int], int]]:
    out = []
    for e in examples:
        prompt = tok(e.prompt)["input_ids"]
        full = tok(e.prompt + e.completion + END, truncation=True, max_length=max_tokens)["input_ids"]
        out.append((full, len(prompt)))
    return out


class _Rows:
    """A torch Dataset of (ids, prompt length); collate pads."""

    def __init__(self, rows: list[tuple[list[int], int]], pad: int) -> None:
        self.rows, self.pad = rows, pad

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.rows[i]

    def collate(self, items: list[tuple[list[int], int]]) -> tuple[Any, Any]:
        if not items:
            torch = _torch()
            return torch.zeros((0, 1), dtype=torch.long), torch.zeros((0, 1), dtype=torch.long)
        return _batch([r for r, _ in items], [p for _, p in items], self.pad)


# -- LoRA fine-tuning -------------------------------------------------------------------------------
def _lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present] or ["c_attn"]
    return get_peft_model(
        model,
        LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=targets, bias="none"),
    )


def finetune(
    base: Path,
    train: Sequence[Example],
    cfg: TrainConfig,
    *,
    resume: bytes | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_checkpoint: Callable[[bytes, int], None] | None = None,
) -> TrainResult:
    torch = _torch()
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    model, tok = load(base)
    peft_model = _lora(model, cfg)
    peft_model.train()
    data = _Rows(encode(tok, train, model.config.max_position_embeddings), tok.pad_token_id)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=cfg.batch,
        shuffle=True,
        generator=gen,
        collate_fn=data.collate,
    )
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.lr)
    trained: Any = peft_model
    engine, delta, privacy = None, None, "none (no differential privacy asked for)"
    if cfg.target_epsilon is not None:
        trained, opt, loader, engine, delta, privacy = _private(peft_model, opt, loader, cfg, len(data))
    steps_per_epoch = max(1, math.ceil(len(data) / cfg.batch))
    total, step, losses = cfg.epochs * steps_per_epoch, 0, []
    if resume is not None:
        state = torch.load(io.BytesIO(resume), weights_only=False)
        set_peft_model_state_dict(peft_model, state["adapter"])
        opt.load_state_dict(state["optimizer"])
        if engine is not None and state.get("accountant") is not None:
            engine.accountant.load_state_dict(state["accountant"])
        step, losses = state["step"], state["losses"]
    skip = step  # a resumed run replays the data order up to where it stopped
    while step < total:
        for ids, labels in loader:
            if step >= total:
                break
            if ids.size(0) == 0:  # Poisson sampling drew nobody: nothing to learn, nothing spent
                continue
            if skip:
                skip -= 1
                continue
            loss = _loss(trained, ids, labels).mean()
            loss.backward()
            if engine is None:
                torch.nn.utils.clip_grad_norm_(peft_model.parameters(), cfg.max_grad_norm)
            opt.step()
            opt.zero_grad()
            step += 1
            losses.append(round(float(loss.detach()), 4))
            if on_step:
                on_step(step, total, losses[-1])
            if on_checkpoint and step % cfg.checkpoint_every == 0 and step < total:
                on_checkpoint(_state(peft_model, opt, engine, step, losses), step)
    buf = io.BytesIO()
    torch.save(get_peft_model_state_dict(peft_model), buf)
    epsilon = engine.get_epsilon(delta) if engine is not None and delta else None
    return TrainResult(
        adapter=buf.getvalue(), steps=step, loss=losses[-1] if losses else math.nan,
        seconds=round(time.monotonic() - started, 2), epsilon=epsilon, delta=delta, privacy=privacy,
        losses=losses,
    )  # fmt: skip


def _state(peft_model: Any, opt: Any, engine: Any, step: int, losses: list[float]) -> bytes:
    torch = _torch()
    from peft import get_peft_model_state_dict

    buf = io.BytesIO()
    torch.save(
        {
            "adapter": get_peft_model_state_dict(peft_model),
            "optimizer": opt.state_dict(),
            "accountant": engine.accountant.state_dict() if engine is not None else None,
            "step": step,
            "losses": losses,
        },
        buf,
    )
    return buf.getvalue()


def _private(model: Any, opt: Any, loader: Any, cfg: TrainConfig, n: int) -> tuple[Any, ...]:
    """DP-SGD with Opacus: per-example clipping and noise sized for `target_epsilon` over the run."""
    from opacus import PrivacyEngine

    delta = 1.0 / (10 * n)  # well below 1/N, the usual rule
    engine = PrivacyEngine(accountant="rdp")
    private, popt, ploader = engine.make_private_with_epsilon(
        module=model, optimizer=opt, data_loader=loader, target_epsilon=cfg.target_epsilon,
        target_delta=delta, epochs=cfg.epochs, max_grad_norm=cfg.max_grad_norm,
    )  # fmt: skip
    return private, popt, ploader, engine, delta, f"dp-sgd (opacus, rdp), noise {popt.noise_multiplier:.3f}"


def with_adapter(base: Path, adapter: bytes, cfg: TrainConfig) -> tuple[Any, PreTrainedTokenizerFast]:
    """The base with a trained LoRA adapter, ready to generate."""
    torch = _torch()
    from peft import set_peft_model_state_dict

    model, tok = load(base)
    peft_model = _lora(model, cfg)
    set_peft_model_state_dict(peft_model, torch.load(io.BytesIO(adapter), weights_only=False))
    peft_model.eval()
    return peft_model, tok


def generate(
    model: Any, tok: PreTrainedTokenizerFast, prompts: Sequence[str], max_new_tokens: int = 360
) -> list[str]:
    """Greedy continuations (deterministic), one prompt at a time (no padding effects)."""
    torch = _torch()
    out: list[str] = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt")["input_ids"]
            room = max(1, min(max_new_tokens, model.config.max_position_embeddings - ids.size(1)))
            made = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=room,
                do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )  # fmt: skip
            out.append(str(tok.decode(made[0, ids.size(1) :], skip_special_tokens=True)))
    return out
