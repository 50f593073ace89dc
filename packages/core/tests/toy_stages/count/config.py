from dataclasses import dataclass, field

from fullchain.core.contracts import Stage


@dataclass
class CountConfig:
    corpus: str = field(metadata={"hash": "content"})
    """Text file whose words are counted; hashed by content."""
    lowercase: bool = True
    """Fold case before counting."""
    workers: int = field(default=1, metadata={"hash": False})
    """Does not affect output."""


STAGE = Stage(kind="count", module="toy_stages.count", config=CountConfig,
              outputs={"word_counts": "counts.json"})
