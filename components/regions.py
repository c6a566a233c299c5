"""Azure's public regions, the one list a stack's location is checked against.

A misspelt region (`westeurpe`) passed check and plan, and Azure refused it only at `pulumi up`. The names
are those of `az account list-locations --query "[].name"` on the public cloud, regions and their
extended-access pairs alike; Azure takes a display name too (`West Europe`), which reads as one of them
without spaces and capitals. A region Azure opens later is added here.
"""

from __future__ import annotations

from components.validation import close_to

AZURE_REGIONS = frozenset({
    # Americas
    "eastus", "eastus2", "centralus", "northcentralus", "southcentralus", "westcentralus", "westus", "westus2",
    "westus3", "canadacentral", "canadaeast", "brazilsouth", "brazilsoutheast", "mexicocentral", "chilecentral",
    # Europe
    "northeurope", "westeurope", "uksouth", "ukwest", "francecentral", "francesouth", "germanywestcentral",
    "germanynorth", "switzerlandnorth", "switzerlandwest", "norwayeast", "norwaywest", "swedencentral",
    "swedensouth", "polandcentral", "italynorth", "spaincentral", "austriaeast", "belgiumcentral",
    # Asia Pacific
    "eastasia", "southeastasia", "japaneast", "japanwest", "koreacentral", "koreasouth", "centralindia",
    "southindia", "westindia", "jioindiacentral", "jioindiawest", "australiaeast", "australiasoutheast",
    "australiacentral", "australiacentral2", "newzealandnorth", "indonesiacentral", "malaysiawest",
    # Middle East and Africa
    "uaenorth", "uaecentral", "qatarcentral", "israelcentral", "southafricanorth", "southafricawest",
    # Early-access (canary) regions some subscriptions deploy to
    "eastus2euap", "centraluseuap",
})


def region_name(location: str) -> str:
    """A region as names built from it carry it: Azure takes `West Europe` for westeurope, a DNS name or AKS's
    node resource group name does not."""
    return location.replace(" ", "").lower()


def region_problem(location: str) -> str | None:
    """Why `location` is no Azure region, with the one it likely misspells; None when it is one."""
    name = region_name(location)
    if name in AZURE_REGIONS:
        return None
    close = close_to(name, AZURE_REGIONS)
    if close:
        return f"{location!r} is not an Azure region; did you mean {close}?"
    return (f"{location!r} is not an Azure region (az account list-locations names them, e.g. westeurope; one Azure "
            "opened since this project's list in components/regions.py goes there)")
