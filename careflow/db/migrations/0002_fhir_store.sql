-- The sandbox EHR's FHIR R4 store (careflow/fhir/store.py).  The JSON a client sent (validated, plus id
-- and meta) is kept as JSONB; what search needs beyond the GIN index is extracted at write time.

-- The current version of every resource.  A deleted resource keeps its row (deleted, no content) so a
-- read answers 410 Gone and the version counter carries on if it is written again.
CREATE TABLE fhir_resources (
    resource_type text        NOT NULL,
    id            text        NOT NULL,
    version_id    integer     NOT NULL,
    last_updated  timestamptz NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    patient_id    text,                  -- the patient whose compartment this resource is in
    resource      jsonb,                 -- NULL once deleted
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX fhir_resources_patient_idx ON fhir_resources (resource_type, patient_id, last_updated)
    WHERE patient_id IS NOT NULL;
CREATE INDEX fhir_resources_updated_idx ON fhir_resources (resource_type, last_updated);
-- status / category / code tokens and references: `resource @> ...` and `resource @? jsonpath`.
CREATE INDEX fhir_resources_content_idx ON fhir_resources USING gin (resource jsonb_path_ops);

-- Every version, the current one included: vread and _history read only this table.
CREATE TABLE fhir_resource_history (
    resource_type text        NOT NULL,
    id            text        NOT NULL,
    version_id    integer     NOT NULL,
    last_updated  timestamptz NOT NULL,
    method        text        NOT NULL CHECK (method IN ('POST', 'PUT', 'DELETE')),
    resource      jsonb,                 -- NULL for a delete
    PRIMARY KEY (resource_type, id, version_id)
);

-- Identifiers of current versions (`identifier` search, conditional create).  Not unique: FHIR does
-- not make business identifiers unique (one accession number on every Observation of a panel), and
-- data from other systems must load.  Conditional creates are made race-free instead by a
-- transaction-scoped advisory lock on their criteria, taken before the lookup (see store.py).
CREATE TABLE fhir_identifiers (
    resource_type text NOT NULL,
    id            text NOT NULL,
    system        text NOT NULL,         -- '' when the identifier has no system
    value         text NOT NULL
);
CREATE INDEX fhir_identifiers_lookup_idx ON fhir_identifiers (resource_type, value, system);
CREATE INDEX fhir_identifiers_resource_idx ON fhir_identifiers (resource_type, id);

-- Date search parameters of current versions as half-open ranges [start_at, end_at).
CREATE TABLE fhir_dates (
    resource_type text        NOT NULL,
    id            text        NOT NULL,
    param         text        NOT NULL,
    start_at      timestamptz NOT NULL,
    end_at        timestamptz NOT NULL
);
CREATE INDEX fhir_dates_resource_idx ON fhir_dates (resource_type, id, param);
CREATE INDEX fhir_dates_start_idx ON fhir_dates (resource_type, param, start_at);
CREATE INDEX fhir_dates_end_idx ON fhir_dates (resource_type, param, end_at);
