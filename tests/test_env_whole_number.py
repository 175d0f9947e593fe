"""The whole-number UPSCALE_* variables (download retries and minimum rate, the stream byte limit,
the weights byte limit) are read by one parser: the same values accepted and refused everywhere,
each refusal one line of the same shape, `NAME must be a whole number ..., not 'VALUE'`."""
import re

import pytest

from upscale_cli import download_settings, weights_guard
from upscale_cli.errors import UsageError, WeightsError
from upscale_cli.images import read

# (variable, the function that reads it, the error it raises, the value it gives for "7")
READERS = [
    ("UPSCALE_DOWNLOAD_RETRIES", lambda: download_settings.download_settings().retries, WeightsError),
    ("UPSCALE_DOWNLOAD_MIN_RATE", lambda: download_settings.download_settings().min_rate_bps, WeightsError),
    ("UPSCALE_MAX_STREAM_BYTES", read.stream_byte_limit, UsageError),
    ("UPSCALE_MAX_WEIGHTS_BYTES", weights_guard.max_weights_bytes, WeightsError),
]
NOT_WHOLE_NUMBERS = ["abc", "-1", "+5", "2.5", "1e3", "0x10", "1_000", "7 8", "\u00b2", "\u0663", "\uff17",
                     "1" * 5000]  # superscript two, Arabic-Indic three, fullwidth seven; more digits than int() takes


@pytest.mark.parametrize("name,reader,error", READERS, ids=[r[0] for r in READERS])
@pytest.mark.parametrize("value", NOT_WHOLE_NUMBERS, ids=range(len(NOT_WHOLE_NUMBERS)))
def test_a_value_that_is_no_whole_number_is_one_line_naming_the_variable(name, reader, error, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(error) as info:
        reader()
    message = str(info.value)
    assert type(info.value) is error
    assert re.fullmatch(rf"{name} must be a whole number [^\n]+, not {re.escape(repr(value))}", message), message


@pytest.mark.parametrize("name,reader,error", READERS, ids=[r[0] for r in READERS])
def test_blank_is_the_default_and_digits_are_read_with_spaces_trimmed(name, reader, error, monkeypatch):
    monkeypatch.delenv(name, raising=False)
    default = reader()
    monkeypatch.setenv(name, "  ")
    assert reader() == default
    monkeypatch.setenv(name, " 7\n")
    assert reader() == 7


@pytest.mark.parametrize("name,reader,error,low,high", [
    ("UPSCALE_DOWNLOAD_RETRIES", READERS[0][1], WeightsError, 0, download_settings.MAX_RETRIES),
    ("UPSCALE_DOWNLOAD_MIN_RATE", READERS[1][1], WeightsError, 0, download_settings.MAX_MIN_RATE_BPS),
    ("UPSCALE_MAX_STREAM_BYTES", READERS[2][1], UsageError, 0, None),
    ("UPSCALE_MAX_WEIGHTS_BYTES", READERS[3][1], WeightsError, 1, None),
])
def test_each_variables_range_is_its_own(name, reader, error, low, high, monkeypatch):
    monkeypatch.setenv(name, str(low))
    assert reader() == low
    if low:
        monkeypatch.setenv(name, str(low - 1))
        with pytest.raises(error, match=rf"^{name} must be a whole number"):
            reader()
    if high is None:
        monkeypatch.setenv(name, str(10**30))
        assert reader() == 10**30
    else:
        monkeypatch.setenv(name, str(high))
        assert reader() == high
        monkeypatch.setenv(name, str(high + 1))
        with pytest.raises(error, match=rf"^{name} must be a whole number from 0 to {high}, not '{high + 1}'$"):
            reader()


def test_the_messages_keep_their_words(monkeypatch):
    monkeypatch.setenv("UPSCALE_MAX_STREAM_BYTES", "lots")
    with pytest.raises(UsageError, match=r"^UPSCALE_MAX_STREAM_BYTES must be a whole number of bytes "
                                         r"\(0 = no limit\), not 'lots'$"):
        read.stream_byte_limit()
    monkeypatch.setenv("UPSCALE_MAX_WEIGHTS_BYTES", "0")
    with pytest.raises(WeightsError, match=r"^UPSCALE_MAX_WEIGHTS_BYTES must be a whole number of bytes above 0, "
                                           r"not '0'$"):
        weights_guard.max_weights_bytes()
