"""Notebook 07's exercise: exact top-k search of a gallery by cosine similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipkit.exercises.core import check
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "07_search"


def top_k_search(query_embeddings: torch.Tensor, gallery_embeddings: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (query_embeddings @ gallery_embeddings.T).topk(k, dim=1)  # scores, indices: [Q, k] each, best first


def _least_similar(query_embeddings, gallery_embeddings, k):
    return (query_embeddings @ gallery_embeddings.T).topk(k, dim=1, largest=False)


def _over_queries(query_embeddings, gallery_embeddings, k):
    return (query_embeddings @ gallery_embeddings.T).topk(k, dim=0)


def _distances(query_embeddings, gallery_embeddings, k):
    distances = torch.cdist(query_embeddings, gallery_embeddings)  # [Q, N]
    scores, indices = distances.topk(k, dim=1, largest=False)
    return scores, indices


def _best_last(query_embeddings, gallery_embeddings, k):
    scores, indices = (query_embeddings @ gallery_embeddings.T).sort(dim=1)
    return scores[:, -k:], indices[:, -k:]


def _k_plus_one(query_embeddings, gallery_embeddings, k):
    return (query_embeddings @ gallery_embeddings.T).topk(k + 1, dim=1)


def _cases() -> list[Case]:
    generator = torch.Generator().manual_seed(7)
    cases = []
    for queries, gallery, dim, k in ((3, 10, 6, 4), (2, 7, 4, 2)):
        cases.append(Case(
            f"{queries} queries against a gallery of {gallery} unit vectors of width {dim}, k={k}",
            {
                "query_embeddings": F.normalize(torch.randn(queries, dim, generator=generator), dim=-1),
                "gallery_embeddings": F.normalize(torch.randn(gallery, dim, generator=generator), dim=-1),
                "k": k,
            },
        ))
    return cases


TOP_K_SEARCH = register(Exercise(
    notebook=NOTEBOOK,
    reference=top_k_search,
    cases=_cases,
    returns=(Output("scores", "[Q, k]"), Output("indices", "[Q, k]")),
    on_device=("query_embeddings", "gallery_embeddings"),  # embed_texts and embed_images return them on the model's device
    mistakes=[
        Mistake("least_similar", _least_similar,
                "you returned the k *least* similar images. A higher cosine similarity is a better match: "
                "topk keeps the largest values by default (largest=True)."),
        Mistake("over_queries", _over_queries,
                "you ranked the queries for each image (topk over dim=0). Each query wants its best gallery "
                "images: topk over dim=1 of the [queries, gallery] score matrix."),
        Mistake("distances", _distances,
                "you ranked by Euclidean distance and returned distances as scores. The order is the same for unit "
                "vectors, but the scores should be the cosine similarities, query @ gallery.T."),
        Mistake("best_last", _best_last,
                "the best hit comes last: sorting ascending and keeping the end puts the k best in reverse. Return "
                "them best first, as topk does."),
        Mistake("k_plus_one", _k_plus_one,
                "you returned k + 1 hits per query; return exactly k."),
    ],
    verifies="cosine scores of every query against the gallery, the k best per query, best first",
    hints=[
        "With unit vectors, query_embeddings @ gallery_embeddings.T is the [queries, gallery] matrix of cosine "
        "similarities.",
        "torch.topk(scores, k, dim=1) returns (values, indices), largest first.",
    ],
))


def check_top_k_search(function):
    """Check notebook 07's top_k_search(query_embeddings, gallery_embeddings, k) -> (scores, indices); returns the function to go on with."""
    return check("top_k_search", function)
