"""A LangChain `VectorStore` over a dualvec `Router` (extra `dualvec[langchain]`).

An application built on LangChain keeps its LangChain code and gets the router underneath:
dual writes, the sticky read ramp, shadow reads and metrics, in every phase.

How a LangChain document is stored in a collection, whose fields are declared in its spec:

- `page_content` goes to a declared str field, `text` unless `text_field` names another.
- The whole `metadata` dict goes, JSON-encoded, to a declared str field, `metadata` unless
  `metadata_field` names another: arbitrary keys and nested values come back exactly as given
  (as JSON gives them back: tuples become lists). Both fields are best stored only
  (`filterable = false`).
- Every other declared field takes the metadata value of the same key, so filters on declared
  fields work (`filter={"lang": "en", "year": {"$gte": 2020}}`); the spec decides which keys a
  document must carry and their types, and a document that breaks it raises `ValidationError`.
- With `metadata_field=None`, the metadata is exactly the declared fields (no JSON), for a
  collection whose spec already says everything its records hold.

Ids are the document's (or `ids=`), a uuid4 string when neither gives one; adding an id that is
there replaces that document. `similarity_search_with_score` returns the router's distance,
lower is closer: cosine distance in [0, 2], L2, or the negative dot product; LangChain's
relevance scores are `1 - distance` for cosine, LangChain's Euclidean score for L2, and the inner
product for dot. Bad input raises dualvec's `ValidationError` (a `ValueError`) before any
store is written: a wrong-dimension embedding, metadata that is not JSON, a value of the wrong
type for a declared field; an unknown keyword argument (`filtr=`) raises `TypeError`.
`delete(None)` (LangChain's "delete everything") is refused. The async methods run through an
`AsyncRouter` over the same router, so the event loop never waits on a store.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

from dualvec.async_router import AsyncRouter
from dualvec.errors import BackendMissingError, ConfigError, StoreError, ValidationError
from dualvec.filters import Filter
from dualvec.records import Hit, Metadata, Record
from dualvec.router import Router
from dualvec.spec import CollectionSpec
from dualvec.validation import check_model

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as exc:
    raise BackendMissingError(
        f"dualvec.langchain needs langchain-core: pip install 'dualvec[langchain]' ({exc})"
    ) from exc

__all__ = ["METADATA_FIELD", "TEXT_FIELD", "DualvecVectorStore"]

TEXT_FIELD = "text"
METADATA_FIELD = "metadata"

_Store = TypeVar("_Store", bound="DualvecVectorStore")


class DualvecVectorStore(VectorStore):
    """LangChain's `VectorStore` over one collection's `Router`, embedding with `embedding`.

    The router stays the caller's: this store never closes it. `model`, when given, names the
    embedding model `embedding` computes and must be the collection's (else
    `ModelMismatchError`).
    """

    def __init__(
        self,
        router: Router,
        embedding: Embeddings,
        *,
        text_field: str = TEXT_FIELD,
        metadata_field: str | None = METADATA_FIELD,
        model: str | None = None,
    ) -> None:
        spec = router.spec
        check_model(spec, model)
        _check_str_field(spec, text_field, "text_field", "the page content")
        if metadata_field is not None:
            _check_str_field(spec, metadata_field, "metadata_field", "the JSON-encoded metadata")
            if metadata_field == text_field:
                raise ConfigError(f"text_field and metadata_field are both {text_field!r}; name two fields")
        self.router = router
        self.text_field = text_field
        self.metadata_field = metadata_field
        self._embedding = embedding
        # Declared fields filled from the metadata key of the same name, so filters can use them.
        self._promoted = [name for name in spec.fields if name not in (text_field, metadata_field)]

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @cached_property
    def _async_router(self) -> AsyncRouter:
        """Made at the first async call: a sync-only application never starts its thread pool."""
        return AsyncRouter(self.router)

    @classmethod
    def from_texts(
        cls: type[_Store],
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        router: Router | None = None,
        **kwargs: Any,
    ) -> _Store:
        """Add `texts` to the collection of `router` (required) and return the store over it;
        other keyword arguments are the constructor's."""
        if router is None:
            raise ConfigError("from_texts needs router=: the dualvec Router of the collection to add to")
        store = cls(router, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # writes

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Upsert `documents`: an id already stored is replaced. `ids=` overrides document ids."""
        ids, stored = self._prepare(documents, kwargs)
        if not ids:
            return []
        vectors = self._embedding.embed_documents([d.page_content for d in documents])
        self.router.upsert(_records(ids, vectors, stored))
        return ids

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        ids, stored = self._prepare(documents, kwargs)
        if not ids:
            return []
        vectors = await self._embedding.aembed_documents([d.page_content for d in documents])
        await self._async_router.upsert(_records(ids, vectors, stored))
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete by id; ids not stored are ignored. There is no delete-all (`ids=None`)."""
        _refuse_options("delete", kwargs)
        self.router.delete(_ids_to_delete(ids))
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        _refuse_options("adelete", kwargs)
        await self._async_router.delete(_ids_to_delete(ids))
        return True

    # reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self._document(r.id, r.metadata) for r in self.router.get(ids)]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self._document(r.id, r.metadata) for r in await self._async_router.get(ids)]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Filter | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The `k` documents closest to `query`, filtered on declared fields, on the store this
        caller is routed to (by `routing_key`, else `dualvec.routing_key`'s)."""
        hits = self.similarity_search_with_score(query, k, filter=filter, routing_key=routing_key, **kwargs)
        return [document for document, _ in hits]

    async def asimilarity_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Filter | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        hits = await self.asimilarity_search_with_score(
            query, k, filter=filter, routing_key=routing_key, **kwargs
        )
        return [document for document, _ in hits]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Filter | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents with the router's distance (lower is closer; see the module docstring)."""
        _refuse_options("similarity_search", kwargs)
        vector = self._embedding.embed_query(query)
        return self._scored(self.router.search(vector, k, filter, routing_key=routing_key))

    async def asimilarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Filter | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        _refuse_options("asimilarity_search", kwargs)
        vector = await self._embedding.aembed_query(query)
        return self._scored(await self._async_router.search(vector, k, filter, routing_key=routing_key))

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        *,
        filter: Filter | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _refuse_options("similarity_search_by_vector", kwargs)
        hits = self.router.search(embedding, k, filter, routing_key=routing_key)
        return [document for document, _ in self._scored(hits)]

    async def asimilarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        *,
        filter: Filter | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        _refuse_options("asimilarity_search_by_vector", kwargs)
        hits = await self._async_router.search(embedding, k, filter, routing_key=routing_key)
        return [document for document, _ in self._scored(hits)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = self.router.spec.metric
        if metric == "cosine":
            return self._cosine_relevance_score_fn
        if metric == "l2":
            return self._euclidean_relevance_score_fn
        # LangChain's inner-product score expects the raw product; dualvec hands back its negative.
        return _negated

    # documents <-> records

    def _prepare(
        self, documents: list[Document], options: dict[str, Any]
    ) -> tuple[list[str], list[Metadata]]:
        """Ids and stored fields of each document: every check that needs no vector, done
        before the embedding function is paid for."""
        given = options.pop("ids", None)
        options.pop("batch_size", None)  # LangChain's indexer passes it; a batch is one upsert here
        _refuse_options("add_documents", options)
        ids = self._ids_for(documents, given)
        return ids, [
            self._stored(position, i, d) for position, (i, d) in enumerate(zip(ids, documents, strict=True))
        ]

    def _ids_for(self, documents: list[Document], given: Sequence[str | None] | None) -> list[str]:
        if given is not None and len(given) != len(documents):
            raise ValidationError(
                f"ids: {len(given)} ids for {len(documents)} documents; pass one id (or None) per document"
            )
        chosen = [d.id if given is None or given[p] is None else given[p] for p, d in enumerate(documents)]
        if self.router.spec.id_type == "int" and None in chosen:
            raise ValidationError(
                f"documents[{chosen.index(None)}]: no id, and collection {self.router.spec.name!r} keys "
                "records by 64-bit integers (id_type = 'int'); pass ids as decimal strings"
            )
        return [str(uuid.uuid4()) if i is None else i for i in chosen]

    def _stored(self, position: int, document_id: str, document: Document) -> Metadata:
        metadata = document.metadata
        if self.metadata_field is None:
            if self.text_field in metadata:
                raise ValidationError(
                    f"documents[{position}] (id {document_id!r}): metadata key {self.text_field!r} "
                    "is the field that holds page_content; rename the key"
                )
            return {**metadata, self.text_field: document.page_content}
        try:
            encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"documents[{position}] (id {document_id!r}): metadata is not JSON ({exc}); use str, "
                "finite numbers, bool, None, lists and dicts"
            ) from exc
        stored = {name: metadata[name] for name in self._promoted if metadata.get(name) is not None}
        return {**stored, self.text_field: document.page_content, self.metadata_field: encoded}

    def _document(self, record_id: str, stored: Metadata) -> Document:
        text = stored.get(self.text_field)
        encoded = None if self.metadata_field is None else stored.get(self.metadata_field)
        if encoded is None:
            # No JSON (metadata_field=None, or a record the application wrote itself): the
            # declared fields are the metadata.
            metadata = {k: v for k, v in stored.items() if k not in (self.text_field, self.metadata_field)}
        else:
            metadata = _decoded(record_id, self.metadata_field, encoded)
        return Document(id=record_id, page_content=text or "", metadata=metadata)

    def _scored(self, hits: list[Hit]) -> list[tuple[Document, float]]:
        return [(self._document(hit.id, hit.metadata), hit.distance) for hit in hits]


def _check_str_field(spec: CollectionSpec, name: str, option: str, holds: str) -> None:
    field = spec.fields.get(name)
    if field is None or field.type != "str":
        raise ConfigError(
            f"collection {spec.name!r} has no str field {name!r} for {holds}; declare "
            f'`{name} = {{ type = "str", filterable = false }}` in its fields, or pass {option}= '
            f"naming a declared str field (declared: {sorted(spec.fields)})"
        )


def _records(ids: list[str], vectors: list[list[float]], stored: list[Metadata]) -> list[Record]:
    if len(vectors) != len(ids):
        raise ValidationError(
            f"the embedding function returned {len(vectors)} vectors for {len(ids)} documents"
        )
    return [Record(i, v, m) for i, v, m in zip(ids, vectors, stored, strict=True)]


def _ids_to_delete(ids: list[str] | None) -> list[str]:
    if ids is None:
        raise ValidationError("ids: pass the ids to delete; dualvec deletes no whole collection")
    return ids


def _decoded(record_id: str, field: str | None, encoded: Any) -> dict[str, Any]:
    try:
        metadata = json.loads(encoded)
    except (TypeError, ValueError):
        metadata = None
    if not isinstance(metadata, dict):
        raise StoreError(
            f"record {record_id!r}: field {field!r} holds no JSON object ({encoded!r:.80}); it was "
            "not written through DualvecVectorStore, so pass metadata_field=None to read it"
        )
    return metadata


def _refuse_options(method: str, options: dict[str, Any]) -> None:
    """A misspelt option (`filtr=`) must fail, not search unfiltered."""
    if options:
        raise TypeError(f"{method}() got unexpected keyword argument(s) {sorted(options)}")


def _negated(distance: float) -> float:
    return -distance
