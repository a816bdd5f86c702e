from setuptools import setup

setup(name="tinykern", version="0.0", py_modules=["tinykern"])
