"""The session judges as data: registered, rendered with the conversation fenced, labelled sets for
``tracejudge calibrate``, and configuration errors that name the key."""

from __future__ import annotations

import pytest

from tracejudge.config import ConfigError, load_config
from tracejudge.judges import SESSION_JUDGES, Turn, conversation_input, default_registry, render
from tracejudge.judges.calibration import shipped_dataset, load_dataset


def test_the_three_session_judges_are_registered_with_criteria_and_five_levels():
    assert set(SESSION_JUDGES) == {"conversation_completeness", "user_frustration", "knowledge_retention"}
    for name, judge in SESSION_JUDGES.items():
        assert default_registry().get(name) is judge
        assert judge.variables == ("conversation",)
        assert judge.criteria and [level.score for level in judge.rubric] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_a_session_judge_sees_every_turn_in_order_between_data_markers():
    turns = [Turn(trace_id=f"t{i}", user=f"question {i}", assistant=f"answer {i}") for i in range(1, 4)]
    prompt = render(SESSION_JUDGES["user_frustration"], conversation_input("s-1", turns))
    user = prompt.messages[1]["content"]
    assert f'<data-{prompt.nonce} name="conversation">' in user
    order = [user.index(f"{kind} {i}") for i in range(1, 4) for kind in ("question", "answer")]
    assert order == sorted(order)
    assert "reason step by step" in prompt.messages[0]["content"]  # reasoning before the score


@pytest.mark.parametrize("name", sorted(SESSION_JUDGES))
def test_every_session_judge_ships_a_labelled_set_of_at_least_20_items(name):
    path = shipped_dataset(name)
    assert path is not None, name
    items = load_dataset(path, judge=SESSION_JUDGES[name])
    assert len(items) >= 20
    assert {item.label for item in items} == {0.0, 0.25, 0.5, 0.75, 1.0}  # every level is represented


def test_an_unknown_session_judge_is_a_config_error_at_its_path():
    with pytest.raises(ConfigError) as caught:
        load_config({"observability": {"mlflow": {"judges": {"sessions": {"judges": ["user_frustation"]}}}}},
                    known_judges=default_registry().names())
    assert "judges.sessions.judges[0].name" in str(caught.value) and "user_frustration" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config({"observability": {"mlflow": {"judges": {"sessions": {"idle_seconds": 0}}}}})
    assert "sessions.idle_seconds" in str(caught.value)
