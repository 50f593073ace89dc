"""The tune config's translations build the libraries' real objects: peft.LoraConfig,
trl.SFTConfig and trl.DPOConfig, with the values the YAML gave (no renamed copies)."""
import pytest
from fullchain.core.config import ConfigError, to_dataclass
from fullchain.tune.config import TuneConfig
from fullchain.tune.translate import to_peft_lora_config, to_trl_config


def _config(**fields) -> TuneConfig:
    return to_dataclass(TuneConfig, fields, "tune")


def test_lora_fields_become_a_peft_lora_config():
    peft = pytest.importorskip("peft")
    cfg = _config(method="lora", lora={"r": 4, "lora_alpha": 32, "lora_dropout": 0.1,
                                       "target_modules": ["q_proj", "v_proj"]})
    lora = peft.LoraConfig(**to_peft_lora_config(cfg))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 32, 0.1)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    assert lora.task_type == peft.TaskType.CAUSAL_LM


def test_sft_config_carries_the_shared_training_vocabulary(tmp_path):
    trl = pytest.importorskip("trl")
    cfg = _config(batch={"seq_length": 256, "micro_batch_size": 2, "global_batch_size": 8},
                  optimizer={"lr": 1e-4, "clip_grad": 0.5},
                  schedule={"train_iters": 30, "warmup_iters": 3, "min_lr": 1e-5},
                  checkpoint={"save_interval": 10}, logging={"tensorboard": False},
                  train_sampling_strategy="group_by_length")
    args = trl.SFTConfig(**to_trl_config(cfg, str(tmp_path), "fp32", data_parallel_size=2))
    assert args.train_sampling_strategy == "group_by_length"
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    assert (args.max_length, args.learning_rate, args.max_grad_norm) == (256, 1e-4, 0.5)
    assert (args.max_steps, args.warmup_steps, args.save_steps, args.seed) == (30, 3, 10, 1234)
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-5}
    assert args.report_to in ([], ["none"]) and args.bf16 is False


def test_dpo_fields_keep_trls_names(tmp_path):
    trl = pytest.importorskip("trl")
    cfg = _config(method="dpo", dpo={"beta": 0.2, "loss_type": "ipo"},
                  schedule={"train_iters": None, "epochs": 2.0, "lr_decay_style": "constant"})
    args = trl.DPOConfig(**to_trl_config(cfg, str(tmp_path), "fp32"))
    assert (args.beta, args.num_train_epochs, args.max_steps) == (0.2, 2.0, -1)
    assert [str(t) for t in ([args.loss_type] if isinstance(args.loss_type, str) else args.loss_type)] \
        == ["ipo"]


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"^tune\.lora\.alpha: unknown key .*Did you mean 'lora_alpha'"):
        _config(lora={"alpha": 16})
    with pytest.raises(ConfigError, match=r"^tune\.packing: not supported for dpo"):
        _config(method="dpo", packing=True)
    with pytest.raises(ConfigError, match=r"^tune\.schedule\.min_lr: .* must be within"):
        _config(schedule={"min_lr": 1.0})
    with pytest.raises(ValueError, match=r"^batch\.global_batch_size: 8 is not divisible"):
        to_trl_config(_config(), "out", "fp32", data_parallel_size=3)


def test_qlora_fields_become_a_bitsandbytes_config():
    transformers = pytest.importorskip("transformers")
    cfg = _config(method="qlora", qlora={"bnb_4bit_quant_type": "fp4"})
    from fullchain.tune.translate import to_bnb_config

    kwargs = to_bnb_config(cfg, "bf16")
    try:
        bnb = transformers.BitsAndBytesConfig(**kwargs)
    except ImportError as exc:  # the class checks that bitsandbytes is installed (GPU machines)
        pytest.skip(f"bitsandbytes is not installed here: {exc}")
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "fp4" and bnb.bnb_4bit_use_double_quant
