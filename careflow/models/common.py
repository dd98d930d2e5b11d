"""Types more than one pipeline's models use."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# A FHIR resource id (R4 `id`: [A-Za-z0-9\-\.]{1,64}).  Ids name workflows too, so nothing else gets in.
FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
FhirId = Annotated[str, Field(pattern=FHIR_ID)]
