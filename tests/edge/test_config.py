"""Config: the seed's file runs unchanged; every bad value is named; templates round-trip."""

from pathlib import Path

import pytest

from skinseg.cli import app
from skinseg.shared.config import SCHEMA, defaults, load_config, template
from skinseg.shared.errors import SkinsegError
from tests.cli_helpers import runner

SEED = Path(__file__).resolve().parents[1] / "data" / "seed_train_eval_infer.config"


def test_seed_config_is_accepted_as_written():
    warnings = []
    cfg = load_config(SEED, warnings.append)
    assert warnings == []
    assert cfg.model.image_width == 512 and cfg.model.activation == "mish" and cfg.model.loss == "bce_dice"
    assert cfg.augmentor.alpah == 1300 and cfg.augmentor.sigmoid == 8 and cfg.augmentor.angles == [0, 90, 180, 270]
    assert cfg.mask.threshold == pytest.approx(128 / 255)
    # relative paths resolve against the config file's folder
    assert cfg.train.image_datapath == (SEED.parent / "../../../dataset/Skin-Cancer/train/images").resolve()
    assert cfg.infer.images_dir == (SEED.parent / "mini_test/images").resolve()


def _write(tmp_path, text):
    p = tmp_path / "c.ini"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepochs = ten\n", r"\[train\] epochs = ten: expected an integer between 1 and 100000"),
        ("[train]\nbatch_size = 0\n", r"\[train\] batch_size = 0: expected a number between 1 and 4096"),
        ("[model]\nbackbone = vgg\n", r"\[model\] backbone = vgg: expected one of mobilenetv2, resnet50"),
        ("[augmentor]\nhflip = maybe\n", r"\[augmentor\] hflip = maybe: expected True or False"),
        ("[augmentor]\nangles = 90deg\n", r"\[augmentor\] angles = 90deg: expected a list"),
        ("[model]\nworking_scale = 10\n", r"working_scale = 10: expected a long side"),
        ("[train\nepochs = 1\n", r"a section header is \[name\]"),
    ],
)
def test_errors_name_file_section_key_value_and_expectation(tmp_path, text, message):
    p = _write(tmp_path, text)
    with pytest.raises(SkinsegError, match=message) as err:
        load_config(p)
    assert str(p) in str(err.value)


def test_unknown_key_is_an_error_naming_the_closest_key(tmp_path):
    """A typo (`epoch = 3`) must not train the default 100 epochs with a warning lost in TensorFlow's logs."""
    with pytest.raises(SkinsegError, match=r"\[train\] unknown key 'epoch'; did you mean 'epochs'\?"):
        load_config(_write(tmp_path, "[train]\nepoch = 3\n"))


def test_unknown_section_warns_with_closest_match(tmp_path):
    warnings = []
    load_config(_write(tmp_path, "[augmentr]\nhflip = True\n"), warnings.append)
    assert any("[augmentr]" in w and "[augmentor]" in w for w in warnings)


def test_missing_file_suggests_init_config(tmp_path):
    with pytest.raises(SkinsegError, match="init-config"):
        load_config(tmp_path / "nope.ini")


def test_template_has_every_key_and_round_trips_to_defaults(tmp_path):
    text = template()
    for sec, keys in SCHEMA.items():
        assert f"[{sec}]" in text
        for k in keys:
            assert f"\n{k} = " in text
    cfg = load_config(_write(tmp_path, text))
    want = defaults()
    for sec, keys in SCHEMA.items():
        for k, key in keys.items():
            got = getattr(getattr(cfg, sec), k)
            if key.type == "path":
                continue
            if (sec, k) == ("mask", "threshold"):
                assert got == pytest.approx(128 / 255)
            elif k == "name":
                assert got == "c"
            elif key.type == "scale":
                assert got == (None if want[sec][k] == "native" else want[sec][k]), (sec, k)
            else:
                assert got == want[sec][k], (sec, k)


def test_weights_file_resolves_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = load_config(_write(tmp_path / "sub", '[model]\nweights = "../runs/a/best.keras"\n'))
    assert cfg.model.weights == str((tmp_path / "runs/a/best.keras").resolve())
    for keyword in ("none", "imagenet", "ImageNet"):
        assert load_config(_write(tmp_path, f"[model]\nweights = {keyword}\n")).model.weights == keyword.lower()


@pytest.mark.parametrize(("text", "message"), [
    ("[train]\nepochs = 1\n[TRAIN]\nbatch_size = 2\n", r"c.ini:3: section \[TRAIN\] repeats \[train\] of line 1"),
    ("[train]\nepochs = 1\n[train ]\nbatch_size = 2\n", r"repeats \[train\] of line 1"),
    ("[train]\nimage_datapath = a\nIMAGE_DATAPATH = b\n",
     r"c.ini:3: \[train\] IMAGE_DATAPATH repeats image_datapath of line 2"),
    ("[DEFAULT]\nepochs = 3\n[train]\n", r"c.ini:1: \[DEFAULT\] is not used"),
    ("[train]\n  epochs = 3\n", r"c.ini:2: indented line 'epochs = 3'"),
    ('[train]\nimage_datapath = "one\n', "the quote is not closed"),
])
def test_one_ini_rule_for_duplicates_default_and_indentation(tmp_path, text, message):
    with pytest.raises(SkinsegError, match=message) as err:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_inline_comments_need_white_space_and_quotes_keep_everything(tmp_path):
    for name in ("one", "one #2", "two;three", "q'uote"):
        (tmp_path / name).mkdir()
    cfg = load_config(_write(tmp_path, '[train]\nimage_datapath = "one #2"   # the folder with a hash\n'
                                       "mask_datapath = two;three\n"))
    assert cfg.train.image_datapath == (tmp_path / "one #2").resolve()
    assert cfg.train.mask_datapath == (tmp_path / "two;three").resolve()  # no white space before ';'
    cfg = load_config(_write(tmp_path, "[train]\nimage_datapath = one #2\n"))
    assert cfg.train.image_datapath == (tmp_path / "one").resolve()  # documented: ' #' starts a comment


def test_a_config_file_name_with_spaces_gives_a_safe_run_name(tmp_path):
    p = tmp_path / "my config.ini"
    p.write_text("[train]\nepochs = 1\n")
    assert load_config(p).train.name == "my-config"


def test_init_config_makes_its_folder_and_refuses_a_folder(tmp_path):
    res = runner.invoke(app, ["init-config", str(tmp_path / "new" / "config.ini")], env={"COLUMNS": "40"})
    assert res.exit_code == 0 and (tmp_path / "new" / "config.ini").is_file()
    assert f"  skinseg train {tmp_path / 'new' / 'config.ini'}" in res.output.splitlines()  # one line, unwrapped
    res = runner.invoke(app, ["init-config", str(tmp_path), "--force"])
    assert res.exit_code == 2 and "is a folder" in res.output


@pytest.mark.parametrize(
    ("text", "check"),
    [("\ufeff[train]\nepochs = 3\n", lambda c: c.train.epochs == 3),
     ("[mask]\nthreshold = 1\n", lambda c: c.mask.threshold == pytest.approx(1 / 255)),
     ("[mask]\nthreshold = 255\n", lambda c: c.mask.threshold == 1.0)],
)
def test_config_accepts_what_its_docs_allow(tmp_path, text, check):
    p = tmp_path / "c.ini"
    p.write_text(text, encoding="utf-8")
    assert check(load_config(p))


@pytest.mark.parametrize(
    ("text", "message"),
    [("[augmentor]\nalpah = 1e999\n", "alpah"), ("[augmentor]\nalpah = 1e300\n", "between 0 and 10000"),
     ('[train]\nname = "../../x"\n', "name = ../../x"), ("[model]\nworking_scale = 100000000\n", "working_scale"),
     ("[model]\nimage_width = 200\n", "multiple of 16")],
)
def test_config_bounds_every_number_and_the_run_name(tmp_path, text, message):
    p = tmp_path / "c.ini"
    p.write_text(text)
    with pytest.raises(SkinsegError, match=message):
        load_config(p)


def test_seed_config_means_resnet50_with_the_standard_decoder(tmp_path):
    p = tmp_path / "c.ini"
    p.write_text('[model]\nmodel = "TensorflowDeepLabV3Plus"\n')
    cfg = load_config(p)
    assert (cfg.model.backbone, cfg.model.decoder) == ("resnet50", "standard")
    p.write_text('[model]\nmodel = "TensorflowDeepLabV3Plus"\nbackbone = "mobilenetv2"\n')
    assert load_config(p).model.backbone == "mobilenetv2"
