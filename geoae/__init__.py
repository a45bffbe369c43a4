"""geoae: locate Twitter users from what they write.

Data flow, one module per stage:
tweets -> documents -> labels -> features -> sdae (model) -> pretrain -> finetune
-> artifact -> predict -> evaluate / report.
"""

__version__ = "0.1.0"
