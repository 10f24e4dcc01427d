"""`python -m recpie explain` on real NYC users with the tiny model and the default counter."""
from __future__ import annotations

import pytest
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.cli.explain import explain_main
from recpie.errors import InputError


def test_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        explain_main(["--help"])
    assert e.value.code == 0 and "top-K" in capsys.readouterr().out


def test_explains_the_counter_top_k_of_a_real_user(nyc_data, tiny_llm_dir, data_root, capsys):  # noqa: F811
    d = nyc_data
    user = d.user_ids[7]
    base = [user, "--model", str(tiny_llm_dir), "--k", "3", "--max-new-tokens", "3",
            "--data-root", str(data_root)]
    assert explain_main(base) == 0
    out = capsys.readouterr().out.splitlines()
    last = d.user_start[8] - 1
    assert f"{last - d.user_start[7]} earlier check-ins" in out[0]
    assert [x.split(". ", 1)[0] for x in out[1::2]] == ["1", "2", "3"]
    assert all(x.strip().startswith("may like:") for x in out[2::2])
    # --time picks the first check-in at/after it: the history shrinks to the check-ins before it
    from datetime import datetime, timezone

    t = datetime.fromtimestamp(int(d.time[d.user_start[7] + 5]), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    explain_main([*base, "--time", t])
    assert "5 earlier check-ins" in capsys.readouterr().out
    with pytest.raises(InputError, match="not in foursquare"):
        explain_main(["no-such-user", *base[1:]])
