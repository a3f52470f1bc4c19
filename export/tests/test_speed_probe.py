import pytest

from export.tools.speed_probe import get_args_parser, probe
from export.vlt.config import parse_overrides


def test_overrides_parse_python_literals_and_plain_strings():
    assert parse_overrides(["decoder_width=16", "backbone_depths=(1, 1, 2, 2, 1)", "gru_recurrent_activation=sigmoid"]) == {
        "decoder_width": 16, "backbone_depths": (1, 1, 2, 2, 1), "gru_recurrent_activation": "sigmoid"}
    # booleans in any case: "false" must not reach the config as a (truthy) string
    assert parse_overrides(["qgm_input_proj=false", "mask_padding=TRUE"]) == {
        "qgm_input_proj": False, "mask_padding": True}


def test_probe_times_a_training_step_and_each_module(capsys):
    args = get_args_parser().parse_args(["--set", "image_size=64", "--set", "decoder_width=8", "--batch-size", "4",
                                         "--images", "2", "--steps", "1", "--warmup", "1", "--threads", "1"])
    result = probe(args)
    assert result["step_ms"] > 0 and result["samples_per_s"] == pytest.approx(4000 / result["step_ms"])
    out = capsys.readouterr().out
    for module in ("backbone", "language_encoder", "fusion", "qgm", "transformer", "qbm", "mask_decoder"):
        assert f"{module} " in out
