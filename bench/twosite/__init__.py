"""The two-site plug-in: Site One obfuscates and audits, Site Two trains on noisy data only.

It reaches the core only through `bench.plugins`; nothing outside this package and the CLI
imports it. `register()` is called once per process by `bench.plugins.load`; it imports
nothing heavy, so `python -m bench --help` stays fast: each extension imports its module
when it is first used.
"""
import importlib


def _later(module: str, name: str):
    """A function of bench.twosite.<module>, imported at its first call."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"bench.twosite.{module}"), name)(*args, **kwargs)
    call.__name__ = name
    return call


def register() -> None:
    from bench import plugins
    from bench.twosite import report

    plugins.add_source("obfuscated", _later("source", "plan_obfuscated"),
                       dataset=_later("source", "obfuscated_dataset"),
                       check=_later("source", "check_obfuscated"))
    plugins.add_target(plugins.Target("noise2noise", noisy_only=True,
                                      dataset=_later("source", "noise2noise_dataset"),
                                      check=_later("source", "check_noise2noise")))
    plugins.add_after_training(_later("model_file", "save_after_training"))
    plugins.add_record_extras(_later("audit", "record_extras"))
    plugins.add_report_section(report.PRIVACY)  # report.py imports nothing heavy
