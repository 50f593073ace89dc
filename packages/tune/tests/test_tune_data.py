"""The chat template, the loss mask and packing, on the data stage's real tokenizer and template."""
import pytest
from fullchain.tune.data import IGNORE_INDEX, Collator, Example, as_rows, pack, tokenize_conversation
from tune_testing import TOOL_CONVERSATION


@pytest.fixture(scope="module")
def tokenizer(tune_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tune_tokenizer))


def test_labels_are_exactly_the_assistant_turns_token_by_token(tokenizer):
    example = tokenize_conversation(tokenizer, TOOL_CONVERSATION)
    text = tokenizer.apply_chat_template(TOOL_CONVERSATION["messages"],
                                         tools=TOOL_CONVERSATION["tools"], tokenize=False)
    # template round trip: the ids decode to exactly the rendered conversation
    assert tokenizer.decode(example.input_ids) == text
    # the two assistant turns, each up to and including <|im_end|> (not the newline after it)
    turns = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
             "It is 20 C in Paris.<|im_end|>"]
    spans, start = [], None
    for i, label in enumerate(example.labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    assert [tokenizer.decode(example.input_ids[a:b]) for a, b in spans] == turns
    for i, (token, label) in enumerate(zip(example.input_ids, example.labels)):
        assert label in (token, IGNORE_INDEX), i
    # everything else (system with the tool list, user turn, tool result, role headers) is masked
    masked = tokenizer.decode([t for t, lab in zip(example.input_ids, example.labels) if lab == IGNORE_INDEX])
    for part in ("Be brief.", "<tools>", "Weather in Paris?", "<tool_response>", '{"temp_c": 20}',
                 "<|im_start|>assistant\n"):
        assert part in masked
    assert "It is 20 C" not in masked and '"arguments"' not in masked.split("</tools>")[1]


def test_packing_keeps_each_conversation_separate(tokenizer, tune_base_model):
    """Per-sample losses of packed rows (position ids, no attention mask) equal the losses of
    the same conversations run one at a time, to 1e-5."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tune_base_model), attn_implementation="sdpa")
    model.config.use_cache = False
    conversations = [{"messages": [{"role": "user", "content": f"Question {i}: " + "why? " * (i * 3)},
                                   {"role": "assistant", "content": "Because " * (i + 1) + "it is."}]}
                     for i in range(7)] + [TOOL_CONVERSATION]
    examples = [tokenize_conversation(tokenizer, c) for c in conversations]
    seq = 2 * max(len(e.input_ids) for e in examples)
    rows = pack(examples, seq)
    assert len(rows) < len(examples) and all(len(r.input_ids) <= seq for r in rows)

    def per_token_loss(logits, labels):
        shifted = labels[..., 1:]
        loss = torch.nn.functional.cross_entropy(logits[..., :-1, :].transpose(1, 2), shifted,
                                                 ignore_index=IGNORE_INDEX, reduction="none")
        return loss, shifted != IGNORE_INDEX

    alone = {}
    with torch.no_grad():
        for i, e in enumerate(examples):
            ids = torch.tensor([e.input_ids])
            loss, keep = per_token_loss(model(ids).logits, torch.tensor([e.labels]))
            alone[tuple(e.input_ids)] = loss[keep]
        batch = Collator(tokenizer.pad_token_id)(as_rows([], rows))
        assert "attention_mask" not in batch
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        loss, keep = per_token_loss(logits, batch["labels"])
        # split each row's losses back into its conversations (by the position-id resets)
        found = 0
        for r, row in enumerate(rows):
            starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.input_ids)]
            for a, b in zip(starts, starts[1:]):
                ids = tuple(row.input_ids[a:b])
                packed_losses = loss[r, a:b - 1][keep[r, a:b - 1]]
                # the first label of a packed conversation is dropped (nothing of it precedes it)
                torch.testing.assert_close(packed_losses, alone[ids], atol=1e-5, rtol=1e-5)
                found += 1
        assert found == len(examples)
        # with a KV cache transformers would not isolate the conversations: the check is real
        model.config.use_cache = True
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        assert not torch.allclose(leaky, logits, atol=1e-4)


def test_collator_pads_unpacked_rows_with_a_mask():
    batch = Collator(pad_token_id=1)(as_rows([Example([5, 6, 7], [-100, 6, 7]), Example([8], [8])], None))
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


@pytest.mark.parametrize("adapter", [False, True])
def test_labelled_logits_give_the_models_own_loss_and_gradients(tokenizer, tune_base_model, adapter):
    """The output layer run only at labelled positions (sft.LabelledLogits, what the Trainer
    uses) gives the model's own causal-LM loss and the same gradients, on packed rows; under
    PEFT too; outside `selecting` the model's logits cover every position."""
    import torch
    from fullchain.tune.sft import LabelledLogits
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tune_base_model), attn_implementation="sdpa")
    model.config.use_cache = False
    if adapter:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    conversations = [TOOL_CONVERSATION] + [
        {"messages": [{"role": "user", "content": f"Question {i}?"},
                      {"role": "assistant", "content": "Answer " * (i + 1)}]} for i in range(5)]
    rows = pack([tokenize_conversation(tokenizer, c) for c in conversations], 160)
    batch = Collator(tokenizer.pad_token_id)(as_rows([], rows))
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    trained = [p for p in model.parameters() if p.requires_grad]

    own = model(**inputs, labels=batch["labels"])
    own_grads = torch.autograd.grad(own.loss, trained)
    selection = LabelledLogits(model.get_output_embeddings())
    with selection.selecting(batch["labels"]):
        selected = model(**inputs)
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert selected.logits.shape == (labelled, model.config.vocab_size)
    loss = selection.loss(selected, batch["labels"])
    torch.testing.assert_close(loss, own.loss, atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(torch.autograd.grad(loss, trained), own_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-4)
    # the Trainer's contract: summed over the batch, divided by the tokens of the whole step
    summed = selection.loss(selected, batch["labels"], num_items_in_batch=torch.tensor(2 * labelled))
    torch.testing.assert_close(summed, own.loss / 2, atol=1e-5, rtol=1e-5)
    assert model(**inputs).logits.shape[:2] == batch["input_ids"].shape
