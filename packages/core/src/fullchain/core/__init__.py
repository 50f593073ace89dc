"""fullchain.core: the spine every stage shares."""
from fullchain.core.artifact import Artifact, ArtifactError

__all__ = ["Artifact", "ArtifactError"]
