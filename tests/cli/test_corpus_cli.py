from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fedaudit.cli.main import app
from fedaudit.data.table import FeatureTable
from tests.data._fixtures import write_wav, write_text

runner = CliRunner()


def test_extract_reads_a_generic_manifest(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    write_text(tmp_path / "manifest.csv", "path,speaker_id,gender,emotion\na.wav,s1,F,neu\nb.wav,s2,M,ang\n")
    out = tmp_path / "f.npz"
    res = runner.invoke(app, ["corpus", "extract", "--corpus-dir", str(tmp_path), "--out", str(out),
                              "--feature-set", "mfcc", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    table = FeatureTable.load(str(out))
    assert sorted(table.speaker_id.tolist()) == ["s1", "s2"] and table.emotion.tolist() == ["neutral", "angry"]
