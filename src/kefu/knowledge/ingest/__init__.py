"""Ingestion: source files → structured blocks or FAQ entries → chunks within a token budget."""

from kefu.knowledge.ingest.chunker import chunk_document
from kefu.knowledge.ingest.parsers import SUPPORTED_SUFFIXES, parse_document

__all__ = ["SUPPORTED_SUFFIXES", "chunk_document", "parse_document"]
