"""The tune stage's run() on a tiny Llama, in process: full SFT (and its resume), DPO raising the
chosen-over-rejected margin, packing with activation checkpointing, and each bad input refused
before training with a named cause. Through the runner: test_tune_runner.py."""
from pathlib import Path

import pytest
from fullchain.core.contracts import write_conversations
from fullchain.tune.stage import last_complete_checkpoint, run
from tune_testing import build_model, build_tokenizer, metrics_rows, tune_config


def test_full_sft_lowers_the_loss_and_resumes_from_its_checkpoint(tune_base_model, sft_set, tmp_path):
    """Full SFT on the same 8 conversations lowers their loss; killed while saving its step-8
    checkpoint (simulated: that checkpoint left without trainer_state.json, which the Trainer
    writes last, and the outputs removed), a re-run skips the half-written checkpoint, resumes
    from step 4 and ends with the same losses as the uninterrupted run."""
    cfg = tune_config(base_model=str(tune_base_model), dataset=str(sft_set), max_train_records=8,
                      schedule={"train_iters": 8}, checkpoint={"save_interval": 4},
                      optimizer={"lr": 3e-3, "weight_decay": 0.0})
    out = tmp_path / "full"
    metrics = run(cfg, {}, out)
    losses = [r["loss"] for r in metrics_rows(out) if "loss" in r]
    assert metrics["trainable_parameters"] > 30_000 and len(losses) == 8
    assert losses[-1] < losses[0] - 0.3, losses
    import shutil

    (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").unlink()
    shutil.rmtree(out / "hf")
    assert last_complete_checkpoint(out / "checkpoints") == str(out / "checkpoints" / "checkpoint-4")
    resumed = run(cfg, {}, out)
    again = [r["loss"] for r in metrics_rows(out) if "loss" in r]
    assert len(again) == 8 and again[:4] == losses[:4]
    assert again[4:] == pytest.approx(losses[4:], abs=1e-5)
    assert resumed["train_steps"] == 8


def test_the_last_complete_checkpoint_skips_half_written_ones(tmp_path):
    """Newest first; a checkpoint without trainer_state.json, or with a cut one, is skipped (and
    removed when asked); other names are ignored; none -> None."""
    checkpoints = tmp_path / "checkpoints"
    assert last_complete_checkpoint(checkpoints) is None  # no directory yet
    for step, state in ((4, '{"global_step": 4}'), (12, '{"global_step": 12}'), (16, None), (20, '{"glob')):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        (checkpoints / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (checkpoints / "checkpoint-final").mkdir()
    assert last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-12")
    assert (checkpoints / "checkpoint-16").is_dir()  # kept unless asked
    assert last_complete_checkpoint(checkpoints, remove_incomplete=True) == str(checkpoints / "checkpoint-12")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-12", "checkpoint-4", "checkpoint-final"]
    (checkpoints / "checkpoint-12" / "trainer_state.json").unlink()
    (checkpoints / "checkpoint-4" / "trainer_state.json").unlink()
    assert last_complete_checkpoint(checkpoints) is None


def test_dpo_raises_the_chosen_over_rejected_margin(tune_base_model, dpo_set, tmp_path):
    import torch
    from fullchain.core.contracts import read_conversations
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tune_config(method="dpo", base_model=str(tune_base_model), dataset=str(dpo_set),
                      batch={"seq_length": 256}, schedule={"train_iters": 6},
                      optimizer={"lr": 3e-3, "weight_decay": 0.0})
    metrics = run(cfg, {}, tmp_path / "dpo")
    assert metrics["method"] == "dpo" and "reward_margin" in metrics
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "dpo" / "hf"))
    policy = AutoModelForCausalLM.from_pretrained(str(tmp_path / "dpo" / "hf")).eval()
    reference = AutoModelForCausalLM.from_pretrained(str(tune_base_model)).eval()

    def completion_logp(model, prompt, answer):
        context = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(prompt + answer, return_dict=True)["input_ids"][:256]
        ids = torch.tensor([full])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
        picked = logp.gather(1, ids[0, 1:, None])[:, 0]
        return picked[len(context) - 1:].sum().item()

    margins = []
    for pair in read_conversations(dpo_set).records("train"):
        prompt_length = len(tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True,
                                                          return_dict=True)["input_ids"])
        if prompt_length > 256 - 8:
            continue  # its answers are truncated away (trl drops such pairs from training too)
        reward = [completion_logp(policy, pair["prompt"], pair[k]) - completion_logp(reference, pair["prompt"], pair[k])
                  for k in ("chosen", "rejected")]
        margins.append(reward[0] - reward[1])
    # the reference's own margin is 0 by definition; after DPO most pairs prefer `chosen`
    assert len(margins) >= 8
    assert sum(margins) / len(margins) > 0.5, margins
    assert sum(m > 0 for m in margins) / len(margins) > 0.7, margins


# ---------------------------------------------------------------------------- bad inputs


def _expect(message: str, cfg, out: Path, inputs=None):
    with pytest.raises(ValueError, match=message):
        run(cfg, inputs or {}, out)
    assert not (out / "hf").exists()


def test_a_vocabulary_without_the_chat_tokens_is_refused(sft_set, tmp_path):
    tokenizer = build_tokenizer(tmp_path / "plain_tokenizer", special_tokens=["<|endoftext|>", "<|pad|>"])
    model = build_model(tmp_path / "plain", tokenizer)
    _expect(r"lacks the chat special token '<\|im_start\|>'",
            tune_config(base_model=str(model), dataset=str(sft_set)), tmp_path / "out")


def test_a_model_that_is_not_a_causal_lm_is_refused(tune_tokenizer, sft_set, tmp_path):
    model = build_model(tmp_path / "encoder", tune_tokenizer, architecture="LlamaModel")
    _expect(r"is not a causal language model .*LlamaModel",
            tune_config(base_model=str(model), dataset=str(sft_set)), tmp_path / "out")


def test_a_set_with_no_usable_record_is_refused(tune_base_model, tmp_path):
    long_prompt = [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]
    write_conversations(tmp_path / "long", "messages", {"train": [{"messages": long_prompt}] * 3})
    _expect(r"none of the 3 train records has an assistant token within batch.seq_length=128",
            tune_config(base_model=str(tune_base_model), dataset=str(tmp_path / "long")), tmp_path / "out")
    write_conversations(tmp_path / "pairs", "preference", {"train": [
        {"prompt": long_prompt[:1], "chosen": long_prompt[1:], "rejected": long_prompt[1:]}]})
    _expect(r"method: sft trains on messages records, but .* holds preference records",
            tune_config(base_model=str(tune_base_model), dataset=str(tmp_path / "pairs")), tmp_path / "out")


def test_an_unknown_lora_target_names_the_modules_the_model_has(tune_base_model, sft_set, tmp_path):
    _expect(r"lora.target_modules: \['query_key_value'\] not in the model; its linear modules are "
            r"\['down_proj', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj'\]",
            tune_config(method="lora", base_model=str(tune_base_model), dataset=str(sft_set),
                        lora={"target_modules": ["q_proj", "query_key_value"]}), tmp_path / "out")


def test_qlora_on_cpu_is_refused_at_plan_and_at_run(tune_base_model, sft_set, tmp_path):
    import torch
    from fullchain.core.placement import Placement

    cfg = tune_config(method="qlora", base_model=str(tune_base_model), dataset=str(sft_set))
    with pytest.raises(ValueError, match=r"^method: qlora .* needs a CUDA GPU; this step runs on CPU"):
        cfg.resolve(Placement(world_size=1, accelerator="cpu", device_count=0, transformer_engine=False))
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU refusal at run time does not apply")
    _expect(r"method: qlora needs a CUDA GPU", cfg, tmp_path / "out")


@pytest.mark.skip(reason="QLoRA needs a CUDA GPU and bitsandbytes; this CPU test machine has neither "
                         "(the CPU refusal is tested above)")
def test_qlora_trains_on_gpu():
    pass


def test_packed_sft_with_gradient_checkpointing(tune_base_model, sft_set, tmp_path):
    """Packing puts the 65 conversations into fewer rows (26 of them fill a row alone at this
    tokenizer's 512-token vocabulary); with activation checkpointing the step still trains and
    every label token is kept."""
    plain = run(tune_config(base_model=str(tune_base_model), dataset=str(sft_set),
                            schedule={"train_iters": 2}, batch={"seq_length": 512}), {}, tmp_path / "plain")
    packed = run(tune_config(base_model=str(tune_base_model), dataset=str(sft_set), packing=True,
                             gradient_checkpointing=True, schedule={"train_iters": 2},
                             batch={"seq_length": 512}), {}, tmp_path / "packed")
    assert plain["train_rows"] == plain["train_records"] == 65
    assert packed["train_rows"] < 50, packed
    # the label a packed row drops (a conversation's first token) is never an assistant token
    assert packed["train_label_tokens"] == plain["train_label_tokens"]
    assert packed["train_steps"] == 2 and packed["first_loss"] > 0


def test_group_by_length_draws_batches_of_similar_length(tune_base_model, sft_set, tmp_path):
    """train_sampling_strategy=group_by_length reaches transformers' LengthGroupedSampler: its
    unpacked batches of the 65 conversations (17-500 tokens) carry far less padding than the
    default random draw's, and the stage trains with it."""
    from fullchain.core.contracts import read_conversations, read_hf_model
    from fullchain.tune.sft import train_sft
    from fullchain.tune.stage import _metrics_callback, _records, load_model
    from transformers.trainer_pt_utils import LengthGroupedSampler

    def padding(strategy: str) -> tuple[float, object]:
        cfg = tune_config(base_model=str(tune_base_model), dataset=str(sft_set),
                          train_sampling_strategy=strategy, batch={"seq_length": 512})
        net, tokenizer = load_model(cfg, read_hf_model(tune_base_model), "fp32")
        records = _records(read_conversations(sft_set), "train", None)
        trainer, _ = train_sft(cfg, net, tokenizer, records, [], tmp_path / strategy, "fp32",
                               _metrics_callback(tmp_path / strategy))
        batches = list(trainer.get_train_dataloader())
        padded = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
        return padded / sum(b["input_ids"].numel() for b in batches), trainer._get_train_sampler()

    grouped, sampler = padding("group_by_length")
    drawn, _ = padding("random")
    assert isinstance(sampler, LengthGroupedSampler)
    assert grouped < drawn / 2, (grouped, drawn)
    metrics = run(tune_config(base_model=str(tune_base_model), dataset=str(sft_set),
                              train_sampling_strategy="group_by_length", schedule={"train_iters": 2},
                              batch={"seq_length": 512}), {}, tmp_path / "run")
    assert metrics["train_steps"] == 2 and metrics["first_loss"] > 0
