"""Resident ID card reader (身份证阅读机具): SAM module over serial, with a pty simulator.

Modules: ``protocol`` (frames, SW3), ``errors``, ``identity`` (text block layouts, validation, masking),
``samples``, ``photo`` (WLT decoder hook), ``transport`` (pyserial), ``sam`` (command layer),
``simulator`` (pty emulator), ``driver`` (``CardReader`` peripheral), ``config``.
Kept import-free so ``drivers.config`` can import ``config`` without pulling in serial I/O.
"""
