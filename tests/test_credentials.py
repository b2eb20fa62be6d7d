"""A storage URL's password is used to connect and nowhere else: not in a log line, a report,
a study record, an exception or a repr. The end-to-end test needs PostgreSQL
(AUTOPRUNE_TEST_POSTGRES, which .ci/run sets with a password); the rest need no server."""

import json
import logging
import os
import uuid

import optuna
import pytest
from sqlalchemy.engine import make_url
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
from autoprune.cli import main
from autoprune.errors import InvalidInputError
from autoprune.results.report import export_commands, report_data
from autoprune.store.storage import STORAGE_ENV, open_storage, redact_url

POSTGRES = os.environ.get("AUTOPRUNE_TEST_POSTGRES")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://ann:s3cret-pw@db:5432/runs", "postgresql://ann:***@db:5432/runs"),
    ("postgresql://ann:p%40ss%2Fword@db/runs", "postgresql://ann:***@db/runs"),
    ("postgresql://db/runs?sslmode=require&password=s3cret-pw",
     "postgresql://db/runs?password=***&sslmode=require"),  # SQLAlchemy sorts the query
    ("sqlite:///reports/run/study.db", "sqlite:///reports/run/study.db"),
])
def test_a_shown_storage_url_has_its_password_masked(url, shown):
    assert redact_url(url) == shown


def test_a_storage_that_cannot_be_opened_names_it_without_the_password():
    with pytest.raises(InvalidInputError) as error:
        open_storage("postgresql://ann:s3cret-pw@127.0.0.1:1/runs")
    text = f"{error.value} {error.value!r} {error.value.__cause__!r} {error.value.__context__!r}"
    assert "postgresql://ann:***@127.0.0.1:1/runs" in str(error.value)
    assert "s3cret-pw" not in text


def test_the_reports_export_command_names_the_variable_not_the_password():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    commands = export_commands(report_data(study, "postgresql://ann:s3cret-pw@db/runs"))
    assert 'autoprune export' in commands["cli"] and f'--storage "${STORAGE_ENV}"' in commands["cli"]
    assert f"os.environ[{STORAGE_ENV!r}]" in commands["python"]
    assert "s3cret-pw" not in json.dumps(commands)
    plain = export_commands(report_data(study, "sqlite:///reports/s/study.db"))
    assert "--storage sqlite:///reports/s/study.db" in plain["cli"]  # nothing secret: as it is


def test_study_commands_read_the_storage_from_the_environment(tmp_path, monkeypatch, capsys):
    train, val = tiny_data()
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    autoprune.search(TinyResNet(), options=QUICK, trials=2, finetune_steps=2, train=train, val=val,
                     storage=url, study_name="s", output_dir=tmp_path, threads=1,
                     verbose=False, write_report=False)
    monkeypatch.setenv(STORAGE_ENV, url)
    output = tmp_path / "report.html"
    assert main(["report", "s", "--output-dir", str(tmp_path), "--output", str(output)]) == 0
    assert output.is_file()


@pytest.mark.skipif(not POSTGRES, reason="set AUTOPRUNE_TEST_POSTGRES to a PostgreSQL URL "
                                         "with a password (.ci/run does)")
def test_no_log_line_report_record_or_repr_of_a_search_holds_the_password(tmp_path, caplog,
                                                                         capfd):
    password = make_url(POSTGRES).password
    assert password, "AUTOPRUNE_TEST_POSTGRES must hold a password for this test to mean anything"
    caplog.set_level(logging.DEBUG)
    train, val = tiny_data()
    name = f"credentials-{uuid.uuid4().hex[:8]}"
    result = autoprune.search(TinyResNet(), options=QUICK, trials=3, finetune_steps=2, train=train, val=val,
                              storage=POSTGRES, study_name=name, output_dir=tmp_path, threads=1)
    report = result.report_path.read_bytes()
    study = optuna.load_study(study_name=name, storage=POSTGRES)
    records = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
                         + [[t.user_attrs, t.system_attrs, t.params] for t in study.trials],
                         default=str)
    logged = "\n".join(r.getMessage() for r in caplog.records) + "".join(capfd.readouterr())
    assert "autoprune" in logged and len(report) > 0 and "uniform" in records
    for where, text in {"log": logged, "study records": records, "repr": repr(result),
                        "SearchResult.storage": result.storage}.items():
        assert password not in text, f"the password is in the {where}"
    assert password.encode() not in report
    reopened = autoprune.SearchResult.from_storage(name, POSTGRES, base_model=TinyResNet())
    assert password not in reopened.storage and password.encode() not in (
        reopened.report(tmp_path / "again.html").read_bytes())
