"""Image search with CLIP embeddings.

- `index`: `EmbeddingIndex`, normalised vectors with one item each, top-k by cosine similarity,
  saved as safetensors + JSON;
- `embedding`: `index_images`, `search_text`, `search_image`: a model's embeddings in and out of an index;
- `metrics`: `retrieval_recall`, R@k both ways for paired image/caption sets;
- `vectors`: checked unit rows and `exact_top_k`, exact search in bounded memory;
- `cache`: image embeddings on disk, per model fingerprint and per file content;
- `folder`: `PhotoIndex`, a folder of your photos indexed through that cache and searched by text or image.
"""

from clipkit.search.embedding import index_images, search_image, search_text
from clipkit.search.folder import IndexingReport, PhotoIndex
from clipkit.search.index import EmbeddingIndex, SearchResult
from clipkit.search.metrics import retrieval_recall
from clipkit.search.vectors import exact_top_k

__all__ = ["EmbeddingIndex", "IndexingReport", "PhotoIndex", "SearchResult", "exact_top_k", "index_images", "retrieval_recall", "search_image", "search_text"]
