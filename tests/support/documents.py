"""Builds small real documents (PDF, DOCX, XLSX) for ingestion tests, with the same libraries operators use."""

from __future__ import annotations

import io


def pdf_bytes(pages: list[list[str]], title: str | None = None) -> bytes:
    """A valid PDF with one text line per entry (Helvetica, ASCII), a page per list; xref offsets computed."""
    objects: list[bytes] = []
    page_ids = []
    font_id = 3
    next_id = 4
    content_objects = []
    for lines in pages:
        stream = (
            b"BT /F1 12 Tf 72 720 Td 14 TL "
            + b" ".join(
                b"(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("ascii") + b") '"
                for line in lines
            )
            + b" ET"
        )
        page_ids.append(next_id)
        content_objects.append((next_id, next_id + 1, stream))
        next_id += 2
    info_id = next_id
    kids = b" ".join(f"{i} 0 R".encode() for i in page_ids)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(len(pages)).encode() + b" >>")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for _page_id, content_id, stream in content_objects:
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream")
    objects.append(f"<< /Title ({title or ''}) >>".encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    trailer = f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {info_id} 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    out.write(trailer.encode())
    return out.getvalue()


def docx_bytes() -> bytes:
    """A Word document with a title, headings, a bulleted list, a paragraph and a table."""
    import docx

    document = docx.Document()
    document.add_heading("Lumo Buds X1 manual", level=0)
    document.add_heading("Charging", level=1)
    document.add_paragraph("Charge the case with the USB-C cable for 2 hours before first use.")
    document.add_paragraph("Red light: charging", style="List Bullet")
    document.add_paragraph("Green light: full", style="List Bullet")
    document.add_heading("Specifications", level=1)
    table = document.add_table(rows=3, cols=2)
    for row, (key, value) in zip(
        table.rows, [("Item", "Value"), ("Battery", "8 hours"), ("Bluetooth", "5.3")], strict=False
    ):
        row.cells[0].text, row.cells[1].text = key, value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    """A workbook whose first sheet holds `rows` (the first row is the header)."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
