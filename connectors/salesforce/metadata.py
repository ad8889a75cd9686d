"""The app's custom fields through the Metadata API, and the permission set that opens them to
the integration user (Salesforce hides fields from the API until one grants them)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError
from simple_salesforce.format import quote_soql_value

from connectors.base import (
    CrmError,
    PropertySpec,
    batches,
)
from connectors.salesforce.api import PERMISSION_SET, field_name

log = logging.getLogger(__name__)


class SchemaMixin:
    """The connector's schema half (``ensure_schema``)."""

    def ensure_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Custom fields (Metadata API upserts, ten per call) for fields missing from the
        object's describe or whose picklist values changed; then the permission set with read
        and edit on every field of the app, assigned to the integration user."""
        objects = ["Account"] if object_type == "Account" else ["Contact", "Lead"]
        created: list[str] = []
        failures: list[str] = []
        for sobject in objects:
            described = self._call(
                f"describe {sobject}", lambda sf, o=sobject: getattr(sf, o).describe()
            )
            visible = {f["name"]: f for f in described.get("fields") or []}
            stale = []
            for spec in specs:
                name = field_name(spec.name)
                have = visible.get(name)
                if have is None:
                    stale.append(spec)
                    created.append(f"{sobject}.{name}")
                elif spec.kind == "enumeration":
                    values = [
                        (v.get("value"), v.get("label")) for v in have.get("picklistValues") or []
                    ]
                    if values != spec.labelled_options():
                        stale.append(spec)
            refused = self._upsert_fields(sobject, stale) if stale else {}
            for name, reason in refused.items():
                failures.append(f"{sobject}.{name} ({reason})")
                if name not in visible:  # never created: nothing to grant
                    created.remove(f"{sobject}.{name}")
            self._granted.setdefault(sobject, set()).update(
                field_name(s.name)
                for s in specs
                if field_name(s.name) not in refused or field_name(s.name) in visible
            )
        # Whatever was created is granted, also when another field was refused: a field
        # outside the permission set stays hidden from the app for good.
        self._grant()
        if failures:
            raise CrmError("Salesforce refused fields: " + "; ".join(failures), 400, "METADATA")
        return created

    def remove_schema(
        self, object_type: str, group: tuple[str, str], specs: Sequence[PropertySpec]
    ) -> list[str]:
        """Delete the app's custom fields (Metadata API deletes, ten per call): their values
        go with them and Salesforce drops them from the permission set."""
        objects = ["Account"] if object_type == "Account" else ["Contact", "Lead"]
        removed: list[str] = []
        for sobject in objects:
            described = self._call(
                f"describe {sobject}", lambda sf, o=sobject: getattr(sf, o).describe()
            )
            present = {f["name"] for f in described.get("fields") or []}
            names = [
                f"{sobject}.{field_name(s.name)}" for s in specs if field_name(s.name) in present
            ]
            for chunk in batches(names, 10):

                def delete(sf, chunk=chunk):
                    _metadata(self._metadata_api(sf).CustomField.delete, list(chunk))

                self._call(f"delete {len(chunk)} {sobject} fields", delete)
            removed += names
            self._granted.pop(sobject, None)
        return removed

    def _custom_field(self, mdapi, sobject: str, spec: PropertySpec):
        common = {
            "fullName": f"{sobject}.{field_name(spec.name)}",
            "label": spec.label[:40],
            "description": (spec.description or spec.label)[:1000],
            "inlineHelpText": (spec.description or spec.label)[:510],
        }
        if spec.unique:
            return mdapi.CustomField(
                **common,
                type="Text",
                length=255,
                externalId=True,
                unique=True,
                caseSensitive=False,
            )
        if spec.kind == "number" and spec.percent:
            return mdapi.CustomField(**common, type="Percent", precision=6, scale=2)
        if spec.kind == "number":
            return mdapi.CustomField(**common, type="Number", precision=18, scale=2)
        if spec.kind == "bool":
            return mdapi.CustomField(**common, type="Checkbox", defaultValue="false")
        if spec.kind == "datetime":
            return mdapi.CustomField(**common, type="DateTime")
        if spec.kind == "enumeration":
            values = [
                mdapi.CustomValue(fullName=value, label=label, default=False)
                for value, label in spec.labelled_options()
            ]
            return mdapi.CustomField(
                **common,
                type="Picklist",
                valueSet=mdapi.ValueSet(
                    restricted=True,
                    valueSetDefinition=mdapi.ValueSetValuesDefinition(value=values, sorted=False),
                ),
            )
        if spec.kind == "text":
            return mdapi.CustomField(**common, type="LongTextArea", length=32768, visibleLines=3)
        return mdapi.CustomField(**common, type="Text", length=255)

    def _metadata_api(self, sf: Salesforce):
        """simple-salesforce's Metadata API client. Its SOAP client (zeep) gets a transport
        of its own; it is pointed at this connector's session so metadata calls use the same
        certificate check, count in the call statistics and report the org's usage."""
        mdapi = sf.mdapi
        transport = getattr(getattr(mdapi, "_client", None), "transport", None)
        if transport is not None and transport.session is not self.session:
            transport.session = self.session
        return mdapi

    def _upsert_fields(self, sobject: str, specs: Sequence[PropertySpec]) -> dict[str, str]:
        """Upsert the fields; those Salesforce refused (field name → its reason). A refused
        component fails alone: the others of the call are saved."""
        refused: dict[str, str] = {}
        for chunk in batches(specs, 10):  # the Metadata API's limit per call

            def upsert(sf, chunk=chunk):
                mdapi = self._metadata_api(sf)
                _metadata(
                    mdapi.CustomField.upsert, [self._custom_field(mdapi, sobject, s) for s in chunk]
                )

            try:
                self._call(f"create {len(chunk)} {sobject} fields", upsert)
            except CrmError as exc:
                failed = _refused_components(str(exc))
                if exc.category != "METADATA" or not failed:
                    raise
                refused.update({name.partition(".")[2]: reason for name, reason in failed.items()})
        saved = len(specs) - len(refused)
        log.info(
            "Salesforce: %s custom fields upserted on %s, %s refused", saved, sobject, len(refused)
        )
        return refused

    def _grant(self) -> None:
        """The permission set: read and edit on every field of the app (an upsert replaces
        its field list, so it always names all of them), then its assignment to the user the
        app runs as."""
        permissions = [
            {"field": f"{sobject}.{name}", "readable": True, "editable": True}
            for sobject, names in sorted(self._granted.items())
            for name in sorted(names)
        ]

        def upsert(sf):
            mdapi = self._metadata_api(sf)
            permission_set = mdapi.PermissionSet(
                fullName=PERMISSION_SET,
                label="PQL engine",
                description="Lets the PQL engine's integration user read and write its fields",
                fieldPermissions=[mdapi.PermissionSetFieldPermissions(**p) for p in permissions],
            )
            _metadata(mdapi.PermissionSet.upsert, [permission_set])

        self._call("upsert permission set", upsert)
        if self._assigned or not self.integration_user_id:
            return
        ids = [
            r["Id"]
            for r in self._query(
                "find permission set",
                # The org's own set: a package's permission set of the same name (its
                # NamespacePrefix set) is not editable and not the one upserted above.
                f"SELECT Id FROM PermissionSet WHERE Name = {quote_soql_value(PERMISSION_SET)} "
                "AND NamespacePrefix = null",
            )
        ]
        if not ids:
            raise CrmError(f"permission set {PERMISSION_SET} not found after its upsert", 404)
        assigned = list(
            self._query(
                "find permission set assignment",
                "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = "
                f"{quote_soql_value(ids[0])} AND AssigneeId = "
                f"{quote_soql_value(self.integration_user_id)}",
            )
        )
        if not assigned:
            self._rest(
                "assign permission set",
                "POST",
                "sobjects/PermissionSetAssignment",
                json={"PermissionSetId": ids[0], "AssigneeId": self.integration_user_id},
            )
        self._assigned = True

    # -- matching


def _metadata(method: Callable[[list], None], components: list) -> None:
    """Run a Metadata API call; its refusals (raised as bare Exceptions by simple-salesforce)
    become CrmErrors."""
    try:
        method(components)
    except SalesforceError:
        raise
    except Exception as exc:
        if type(exc) is Exception:
            raise CrmError(
                f"the Metadata API refused: {str(exc).strip()}", 400, "METADATA"
            ) from exc
        raise


def _refused_components(message: str) -> dict[str, str]:
    """The components simple-salesforce lists in a refused upsert
    ("\nAccount.x__c: (CODE, message), ..."): full name → reason."""
    return {
        name: reason.strip().rstrip(",").strip()
        for name, reason in re.findall(r"(\w+\.\w+): (\([^\n]*)", message)
    }
