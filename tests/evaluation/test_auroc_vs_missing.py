"""The robustness figure: small multiples, one panel per removal kind, one line per model."""

from scar_jax.evaluation import report


def _cond(name, family, rate, mode="", unit=""):
    return {"name": name, "family": family, "rate": rate, "mode": mode, "unit": unit}


CONDITIONS = [
    _cond("clean", "clean", 0.0),
    _cond("lead_drop/k3", "lead_drop", 0.25),
    _cond("lead_drop/k6", "lead_drop", 0.5),
    _cond("temporal/r0.5", "temporal", 0.5),
    _cond("subset/I", "subset", 11 / 12),
    _cond("random/lead/rho0.2", "random", 0.2, unit="lead"),
    _cond("adversarial/whitebox/lead/rho0.2", "adversarial", 0.2, "whitebox", "lead"),
    _cond("adversarial/transfer/lead/rho0.2", "adversarial", 0.2, "transfer", "lead"),
    _cond("random/token/rho0.2", "random", 0.2, unit="token"),
    _cond("adversarial/whitebox/token/rho0.2", "adversarial", 0.2, "whitebox", "token"),
]


def test_removal_kinds_are_rows_of_panels():
    assert report.removal_kinds(CONDITIONS) == [
        [("leads dropped at random", "lead_drop", "", ""),
         ("a time span dropped", "temporal", "", "")],
        [("random leads", "random", "", "lead"),
         ("white-box leads", "adversarial", "whitebox", "lead"),
         ("transfer leads", "adversarial", "transfer", "lead")],
        [("random tokens", "random", "", "token"),
         ("white-box tokens", "adversarial", "whitebox", "token")],
    ]  # fmt: skip


def test_one_panel_per_kind_one_line_per_model(monkeypatch, tmp_path):
    models = {m: {"zeroshot": {c["name"]: {"auroc": 0.9 - 0.1 * i - c["rate"] / 2}
                               for c in CONDITIONS}} for i, m in enumerate(["scar", "merl"])}
    figs = []
    monkeypatch.setattr(report, "_save", lambda fig, path, dpi: figs.append(fig))
    report.plot_auroc_vs_missing({"conditions": CONDITIONS, "models": models}, tmp_path / "a.png")
    (fig,) = figs
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [
        "leads dropped at random", "a time span dropped", "random leads", "white-box leads",
        "transfer leads", "random tokens", "white-box tokens"]
    for ax in panels:
        lines = [ln for ln in ax.get_lines() if ln.get_label() in models]
        assert [ln.get_label() for ln in lines] == ["scar", "merl"]  # one line per model
        # each line starts at the clean AUROC (share removed 0)
        assert [tuple(ln.get_xydata()[0]) for ln in lines] == [(0.0, 0.9), (0.0, 0.8)]
    drop = [ln for ln in panels[0].get_lines() if ln.get_label() == "scar"][0]
    assert drop.get_xydata().tolist() == [[0.0, 0.9], [0.25, 0.775], [0.5, 0.65]]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["scar", "merl"]  # one legend
