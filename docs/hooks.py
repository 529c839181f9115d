"""MkDocs hook: serve applications/results/figures/*.png as figures/*.png."""

import pathlib

from mkdocs.structure.files import File

_FIGURES = pathlib.Path(__file__).resolve().parent.parent / "applications" / "results"


def on_files(files, config):
    for png in sorted((_FIGURES / "figures").glob("*.png")):
        files.append(File(f"figures/{png.name}", src_dir=str(_FIGURES),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
