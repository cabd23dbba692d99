"""Rules of the code's shape, checked on the source itself."""
import re

from devtools.devstack import ROOT

ENV_READ = re.compile(r"\bos\.(environ|getenv|putenv)\b|\bfrom os import .*\b(environ|getenv)\b")
ENV_READERS = {"shared/config/settings.py"}  # plus the dev tooling (devtools/), which runs the stack


def test_only_the_settings_module_reads_the_environment():
    """Settings are read in one place (shared/config/settings.py): everything else gets them from there."""
    offenders = []
    for package in ("shared", "ingress", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in ENV_READERS:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if ENV_READ.search(line.split("#", 1)[0]):
                    offenders.append(f"{name}:{number}: {line.strip()}")
    offenders += [f"{p.name}: {line}" for p in sorted(ROOT.glob("*.py"))
                  for line in p.read_text(encoding="utf-8").splitlines() if ENV_READ.search(line)]
    assert not offenders, "read the environment through shared.config.settings:\n" + "\n".join(offenders)
