#!/usr/bin/env python3
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "sylkpush", "__init__.py"), encoding="utf-8") as stream:
    version = re.search(r'__version__ = "([^"]+)"', stream.read()).group(1)


def data_files(directory, skip=("applications.ini", "general.ini")):
    """Everything under ``directory`` except a live configuration (the demo's)."""
    found = []
    for root, _, files in os.walk(directory):
        if os.path.basename(root) in ("demo", "__pycache__"):
            continue
        kept = [os.path.join(root, f) for f in files if f not in skip]
        if kept:
            found.append((os.path.join("share", "sylk-pushserver", root), kept))
    return found


setup(
    name="sylk-pushserver",
    version=version,
    description="Mobile push notifications (Apple APNs, Firebase FCM) for RTC infrastructures",
    author="AG Projects",
    license="GPL-3.0-or-later",
    url="http://sylkserver.com",
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/sylkpush_plugin.py"]},
    scripts=["sylk-pushserver", "scripts/sylk-pushclient", "scripts/sylk-pushclient-v2"],
    data_files=data_files("resources") + data_files("config"),
    install_requires=[
        "twisted>=22.4",
        "treq>=22.2",
        "h2>=4.1",
        "idna>=3.3",
        "service-identity",
        "pyOpenSSL>=23.0",
        "pyjwt[crypto]>=2.6",
        "google-auth>=1.5.1",
        "prometheus-client>=0.16",
    ],
    extras_require={"journal": ["systemd-python"]},
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Programming Language :: Python :: 3",
        "Framework :: Twisted",
    ],
)
