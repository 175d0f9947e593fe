"""weights_cache.hash_up_to: the one bounded hashing loop, behind hash_file (a cached or added
weights file) and download's resume (the part already on disk and its last bytes)."""
import hashlib
import io

import pytest

from upscale_cli import weights_cache
from upscale_cli.weights_cache import HASH_READ_BYTES, hash_up_to

SIZES = [0, 1, 4095, 4096, 4097, HASH_READ_BYTES, HASH_READ_BYTES + 5, 2 * HASH_READ_BYTES + 3]
DATA = bytes(range(251)) * (max(SIZES) // 251 + 1)  # 251: a prime, so no read lines up with its period


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("limit_change", [-5000, -1, 0, 1, HASH_READ_BYTES])
@pytest.mark.parametrize("keep", [0, 1, 4096])
def test_hashes_at_most_the_limit_and_keeps_the_last_bytes(size, limit_change, keep):
    data = DATA[:size]
    limit = max(0, size + limit_change)
    hasher = hashlib.sha256()
    read, tail = hash_up_to(io.BytesIO(data), limit, hasher, keep=keep)
    expected = data[:limit]
    assert read == len(expected)
    assert hasher.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert tail == (expected[-keep:] if keep else b"")


def test_an_endless_file_is_read_only_up_to_the_limit():
    hasher = hashlib.sha256()
    with open("/dev/zero", "rb") as endless:
        read, tail = hash_up_to(endless, 3 * HASH_READ_BYTES + 7, hasher, keep=10)
    assert read == 3 * HASH_READ_BYTES + 7 and tail == bytes(10)
    assert hasher.hexdigest() == hashlib.sha256(bytes(read)).hexdigest()


def test_hash_file_is_the_files_sha256(tmp_path):
    path = tmp_path / "w.bin"
    data = bytes(range(256)) * 9000  # over two reads
    path.write_bytes(data)
    assert weights_cache.hash_file(path) == hashlib.sha256(data).hexdigest()
