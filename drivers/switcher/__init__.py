"""HDMI/AV matrix switcher: Extron SIS, Kramer Protocol 3000 and a configurable ASCII profile.

Modules: ``protocol`` (the shared model and interfaces), ``extron``, ``kramer``, ``ascii_profile`` (pure,
both directions), ``transport`` (TCP and serial), ``driver`` (``Switcher`` peripheral), ``simulator``,
``errors``, ``config``. Kept import-free so ``drivers.config`` can import ``config`` cheaply.
"""
