"""extract_archive under concurrency: parallel runs extract one archive once."""

import multiprocessing
import tarfile

import numpy as np

from keras_margins.data import archives


def _extract(args):
    archive, cache = args
    return str(archives.extract_archive(archive, cache_dir=cache))


def _make_archive(tmp_path, files=400):
    source = tmp_path / "source" / "data"
    for i in range(files):
        folder = source / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.bin").write_bytes(np.random.default_rng(i).bytes(2048))
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(source, arcname="data")
    return archive


def test_concurrent_extractions_give_one_complete_folder(tmp_path):
    archive = _make_archive(tmp_path)
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        targets = pool.map(_extract, [(archive, cache)] * 8)
    assert len(set(targets)) == 1
    target = cache / "data"
    assert targets[0] == str(target)
    files = sorted(p.relative_to(target) for p in target.rglob("*.bin"))
    assert len(files) == 400
    assert (target / archives._MARKER).exists()
    leftovers = [p.name for p in cache.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_an_interrupted_extraction_is_redone(tmp_path):
    archive = _make_archive(tmp_path, files=8)
    cache = tmp_path / "cache"
    stale = cache / "data"
    (stale / "half").mkdir(parents=True)        # no completion marker: incomplete
    target = archives.extract_archive(archive, cache_dir=cache)
    assert not (target / "half").exists()
    assert len(list(target.rglob("*.bin"))) == 8
