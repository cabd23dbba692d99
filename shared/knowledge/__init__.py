"""Tenant knowledge documents (issue 13): parsing uploaded files into structure, and structure into chunks.

Pure functions: storage, embedding and the Celery ingestion queue build on `parse` and `chunk`.
"""
from shared.knowledge.chunking import Chunk, chunk
from shared.knowledge.documents import Block, Document, DocumentError, Section, detect_kind, parse

__all__ = ["Block", "Chunk", "Document", "DocumentError", "Section", "chunk", "detect_kind", "parse"]
