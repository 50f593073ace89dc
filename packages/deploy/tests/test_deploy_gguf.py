"""The GGUF conversion's own decisions (fullchain.deploy.gguf). The conversion itself needs a
llama.cpp source tree and its comparison with the HF tokenizer needs llama-cpp-python (built from
source, ~45 min here): benchmarks/deploy_engines.py runs both; CI builds neither."""
import subprocess
import sys

from fullchain.deploy.gguf import gpt2_byte_level
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers


def _save(tmp_path, pre_tokenizer, normalizer=None):
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        raw.normalizer = normalizer
    raw.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_only_gpt2_byte_level_pre_tokenization_is_mapped_to_llama_cpps_gpt2(tmp_path):
    # the data stage's tokenizers: ByteLevel with GPT-2's regex, no prefix space
    assert gpt2_byte_level(_save(tmp_path, pre_tokenizers.ByteLevel(add_prefix_space=False)))
    # anything that splits differently keeps the converter's refusal
    assert not gpt2_byte_level(_save(tmp_path, pre_tokenizers.ByteLevel(add_prefix_space=True)))
    assert not gpt2_byte_level(_save(tmp_path, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                         use_regex=False)))
    assert not gpt2_byte_level(_save(tmp_path, pre_tokenizers.Metaspace()))
    assert not gpt2_byte_level(_save(tmp_path, pre_tokenizers.ByteLevel(add_prefix_space=False),
                                     normalizers.NFKC()))


def test_the_converter_entry_point_names_a_missing_llama_cpp_tree(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fullchain.deploy.gguf", "--llama-cpp",
                             str(tmp_path), "model", "--outfile", "x.gguf"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"--llama-cpp {tmp_path}: no convert_hf_to_gguf.py there" in result.stderr
