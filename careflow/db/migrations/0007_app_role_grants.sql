-- The application role (created in 0003) may read and write careflow's working tables.  The audit
-- trail stays INSERT/SELECT only (0003); the gateway's tables were granted in 0004.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON platform_probes, fhir_resources, fhir_resource_history, fhir_identifiers, fhir_dates, notifications
    TO careflow_app;
