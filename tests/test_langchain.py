"""`dualvec.langchain.DualvecVectorStore` (issue #14, item 3): LangChain's own standard suite,
unmodified, over a real Router (a sqlite-blob legacy file and a sqlite-vec target file) in each
phase, then what the suite does not ask: bad input writes nothing, dual writes reach both stores,
filters on declared fields, and one store object used through a whole ramp.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import assert_same_contents
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests.vectorstores import EMBEDDING_SIZE, VectorStoreIntegrationTests

from dualvec import CollectionSpec, ConfigError, ValidationError, open_store
from dualvec.backfill import backfill
from dualvec.flags import write_flag_file
from dualvec.langchain import DualvecVectorStore
from dualvec.outbox import Outbox
from dualvec.router import Router
from dualvec.settings import Flags, Phase, Settings

SHM = Path("/dev/shm")
FIELDS = {
    "text": {"type": "str", "filterable": False},
    "metadata": {"type": "str", "filterable": False},
    "lang": {"type": "str", "optional": True},
}


def spec(fields=None) -> CollectionSpec:
    return CollectionSpec(
        name="docs",
        dim=EMBEDDING_SIZE,
        metric="cosine",
        model="fake",
        fields=FIELDS if fields is None else fields,
    )


@pytest.fixture
def folder(tmp_path):
    """The outbox fsyncs every intent; tmpfs makes that free (durability is not under test)."""
    if not SHM.is_dir():
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=SHM) as scratch:
        yield Path(scratch)


@pytest.fixture
def make_router(folder):
    """Open a Router over fresh sqlite-blob and sqlite-vec files; on teardown, in the dual write
    phases, both stores hold the same records and no write is left to repair."""
    routers = []

    def make(phase="dual", read_percent=50.0, fields=None):
        settings = Settings(
            flag_file=folder / "flags.json",
            outbox_path=folder / "outbox.db",
            phase=phase,
            read_percent=read_percent,
            shadow_percent=100,
            flag_poll_seconds=0.05,
        )
        collection = spec(fields)
        legacy = open_store(f"sqlite-blob://{folder}/legacy.db", collection)
        target = open_store(f"sqlite-vec://{folder}/target.db", collection)
        router = Router.over(legacy, target, settings, start_replayer=False)
        routers.append(router)
        return router

    yield make
    for router in routers:
        try:
            assert Outbox.peek(folder / "outbox.db", "docs").depth == 0
            if router.flags.flags.phase in (Phase.DUAL, Phase.TARGET_PRIMARY):
                assert_same_contents(router.stores["legacy"], router.stores["target"])
        finally:
            router.close()


class TestStandardSuite(VectorStoreIntegrationTests):
    """LangChain's suite, unmodified. Its async tests need pytest-asyncio in auto mode, as in
    LangChain's own packages (`asyncio_mode = "auto"` in pyproject.toml).

    Reads in dual and target-primary go to either store at random (read_percent 50, no
    routing key), so each test's reads are answered by both stores across the suite."""

    @pytest.fixture(params=["legacy", "dual", "target-primary", "target"])
    def vectorstore(self, request, make_router):
        yield DualvecVectorStore(make_router(phase=request.param), self.get_embeddings())


def held_counts(router) -> dict[str, int]:
    return {role: store.count() for role, store in router.stores.items()}


def test_a_wrong_dimension_embedding_raises_validation_error_and_writes_nothing(make_router, folder):
    router = make_router(phase="dual")
    store = DualvecVectorStore(router, DeterministicFakeEmbedding(size=EMBEDDING_SIZE + 1))
    docs = [Document("foo", metadata={"lang": "en"}), Document("bar")]
    with pytest.raises(ValidationError, match=f"record 0 .*must have {EMBEDDING_SIZE} dimensions"):
        store.add_documents(docs, ids=["1", "2"])
    with pytest.raises(ValidationError, match=f"must have {EMBEDDING_SIZE} dimensions"):
        asyncio.run(store.aadd_documents(docs))
    with pytest.raises(ValidationError, match=f"query vector: vector must have {EMBEDDING_SIZE}"):
        store.similarity_search("foo")
    assert held_counts(router) == {"legacy": 0, "target": 0}
    assert Outbox.peek(folder / "outbox.db", "docs").depth == 0


def test_bad_metadata_and_filters_are_refused_before_any_write(make_router):
    router = make_router(phase="dual")
    store = DualvecVectorStore(router, DeterministicFakeEmbedding(size=EMBEDDING_SIZE))
    with pytest.raises(ValidationError, match=r"metadata field 'lang': expected str, got int"):
        store.add_documents([Document("ok"), Document("foo", metadata={"lang": 7})])
    with pytest.raises(ValidationError, match=r"documents\[0\] .*metadata is not JSON"):
        store.add_documents([Document("foo", metadata={"when": object()})])
    assert held_counts(router) == {"legacy": 0, "target": 0}
    with pytest.raises(ValidationError, match="filter: unknown field 'year'"):
        store.similarity_search("foo", filter={"year": 2020})
    with pytest.raises(TypeError, match="filtr"):
        store.similarity_search("foo", filtr={"lang": "en"})


def test_dual_writes_put_every_document_in_both_stores(make_router):
    router = make_router(phase="dual", read_percent=0)
    store = DualvecVectorStore(router, DeterministicFakeEmbedding(size=EMBEDDING_SIZE))
    metadata = [{"lang": "en", "tags": ["a", "b"], "n": 1.5}, {"lang": "fr", "nested": {"x": None}}, {}]
    ids = store.add_texts(["hello", "bonjour", "no metadata"], metadata, ids=["en", "fr", "none"])
    for role in ("legacy", "target"):
        records = {r.id: r.metadata for r in router.stores[role].get(ids)}
        assert records.keys() == {"en", "fr", "none"}, role
        assert records["en"]["text"] == "hello"
        assert json.loads(records["en"]["metadata"]) == {"lang": "en", "tags": ["a", "b"], "n": 1.5}
        assert records["fr"]["lang"] == "fr"  # a declared field: filters can use it
        assert "lang" not in records["none"]
    french = store.similarity_search("hello", k=3, filter={"lang": "fr"})
    assert french == [
        Document(id="fr", page_content="bonjour", metadata={"lang": "fr", "nested": {"x": None}})
    ]
    [(closest, score)] = store.similarity_search_with_relevance_scores("no metadata", k=1)
    assert (closest.id, closest.metadata) == ("none", {})
    assert score == pytest.approx(1.0, abs=1e-5)  # the same vector: cosine distance 0


def test_one_store_object_serves_a_whole_ramp(make_router, folder):
    """Documents added in phase legacy are backfilled; every document added at any step is found
    (by id and by search) at every later step, whichever store serves the reads."""
    router = make_router(phase="legacy", read_percent=0)
    store = DualvecVectorStore(router, DeterministicFakeEmbedding(size=EMBEDDING_SIZE))
    added: dict[str, Document] = {}
    steps = [
        Flags(phase=Phase.LEGACY),
        Flags(phase=Phase.DUAL),
        Flags(phase=Phase.DUAL, read_percent=100),
        Flags(phase=Phase.TARGET_PRIMARY, read_percent=100),
        Flags(phase=Phase.TARGET, read_percent=100),
    ]
    for step, flags in enumerate(steps):
        write_flag_file(folder / "flags.json", flags)
        deadline = time.monotonic() + 5
        while router.flags.flags != flags:
            assert time.monotonic() < deadline, f"router never saw {flags}"
            time.sleep(0.02)
        if step == 1:
            backfill(router.stores["legacy"], router.stores["target"], router.outbox)
        document = Document(f"document of step {step}", metadata={"step": step, "lang": "en"})
        [doc_id] = (
            asyncio.run(store.aadd_documents([document])) if step % 2 else store.add_documents([document])
        )
        added[doc_id] = Document(document.page_content, id=doc_id, metadata=document.metadata)
        assert sorted(store.get_by_ids(list(added)), key=lambda d: d.id) == sorted(
            added.values(), key=lambda d: d.id
        )
        for expected in added.values():
            assert store.similarity_search(expected.page_content, k=1) == [expected], flags
    assert held_counts(router)["target"] == len(steps)


def test_a_spec_without_the_text_field_is_refused_with_the_fix(make_router):
    router = make_router(fields={"title": {"type": "str", "filterable": False}})
    with pytest.raises(ConfigError, match=r"no str field 'text' .*declare `text = \{ type = \"str\""):
        DualvecVectorStore(router, DeterministicFakeEmbedding(size=EMBEDDING_SIZE))


def test_from_texts_then_a_retriever_with_a_filter(make_router):
    store = DualvecVectorStore.from_texts(
        ["hello", "bonjour"],
        DeterministicFakeEmbedding(size=EMBEDDING_SIZE),
        [{"lang": "en"}, {"lang": "fr"}],
        ids=["en", "fr"],
        router=make_router(phase="dual"),
    )
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"lang": "fr"}})
    assert retriever.invoke("hello") == [Document("bonjour", id="fr", metadata={"lang": "fr"})]


def test_without_a_json_field_the_metadata_is_the_declared_fields(make_router):
    fields = {"text": {"type": "str", "filterable": False}, "lang": {"type": "str"}}
    store = DualvecVectorStore(
        make_router(fields=fields), DeterministicFakeEmbedding(size=EMBEDDING_SIZE), metadata_field=None
    )
    store.add_documents([Document("hi", id="a", metadata={"lang": "en"})])
    assert store.get_by_ids(["a"]) == [Document("hi", id="a", metadata={"lang": "en"})]
    with pytest.raises(ValidationError, match=r"unknown metadata field\(s\) \['tags'\]"):
        store.add_documents([Document("x", metadata={"lang": "en", "tags": "t"})])


def test_only_dualvec_langchain_imports_langchain_and_says_which_extra_is_missing():
    code = (
        "import sys, dualvec\n"
        "print('langchain_core' in sys.modules)\n"
        "sys.modules['langchain_core'] = None  # what an install without the extra looks like\n"
        "try:\n"
        "    import dualvec.langchain\n"
        "except dualvec.BackendMissingError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported, message = out.splitlines()
    assert imported == "False"
    assert "pip install 'dualvec[langchain]'" in message
