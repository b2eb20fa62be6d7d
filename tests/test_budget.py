import pytest

from autoprune.errors import InvalidInputError
from autoprune.study.budget import parse_budget, parse_duration


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("8h", 28800),
                                           ("1.5h", 5400), (45, 45), ("30", 30), ("2d", 172800)])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "20 minutes", "-5m", "0", "", "m20"])
def test_unparseable_budget_is_a_clear_error(text):
    with pytest.raises(InvalidInputError, match="budget"):
        parse_budget(text, None)


def test_a_budget_or_a_trial_count_is_required():
    with pytest.raises(InvalidInputError, match="trials=N"):
        parse_budget(None, None)


def test_trial_count_must_be_a_positive_integer():
    with pytest.raises(InvalidInputError, match="positive integer"):
        parse_budget(None, 0)
    assert parse_budget("10m", 5).trials == 5
