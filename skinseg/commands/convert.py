"""`skinseg convert MODEL --to ort`: a model file in another format (inference/convert.py), with what
was checked printed."""

from __future__ import annotations

from pathlib import Path

from skinseg import ui
from skinseg.inference.convert import convert


def run(model: Path, target: str, output: Path | None) -> None:
    from skinseg.inference.model_files import names_shipped, resolve_model

    if names_shipped(model):  # outputs beside a shipped model would land in the package: the current folder
        model = resolve_model(str(model))
        output = output or Path(f"{model.stem}.ort" if target == "ort" else model.name)
    with ui.console.status(f"converting {model.name} to {target}..."):
        res = convert(model, target, output)
    rows = [["files", "\n".join(str(f) for f in res.files)],
            ["parity with the source (engine, 3 images)", f"max |probability difference| {res.max_difference:.2e}, "
                                                          f"mask Jaccard {res.mask_jaccard:.4f}"],
            ["skinseg metadata kept", "yes" if res.metadata_kept else "no (the file had none)"]]
    for ep, after in res.mobile.items():
        before = res.mobile_source.get(ep, {})
        parts = f"{after['partitions']} partition" + ("" if after["partitions"] == 1 else "s")
        said = {"YES": "worth using: it runs the whole model",
                "MAYBE": "may help: it runs most of the model, the CPU the rest",
                "NO": "not worth it: the phone's CPU runs the model (XNNPACK or the CPU provider)"}
        rows.append([f"{ep} on the phone (ORT usability checker)",
                     f"{said.get(after['verdict'], after['verdict'])}; {after['supported']} of {after['nodes']} "
                     f"nodes in {parts} (the .onnx: {before.get('verdict', '?')})"])
    ui.table(f"skinseg convert -> {res.files[0]}", ["check", "result"], rows)
    ui.out.print(f"wrote {ui.escape(str(res.files[0]))} and its required-operators config", soft_wrap=True)
