//! Azure's permissions are code (`quell_azure::permissions`): `infra/README.md` grants exactly
//! the Graph application permissions and names every ARM action the handler's identity needs,
//! and the Bicep gives it exactly the resource roles the code lists.

use std::collections::BTreeSet;

use quell_azure::permissions::{Permission, RESOURCE_ROLES, handler_permissions};
use quell_tests::root;

fn graph() -> BTreeSet<String> {
    handler_permissions()
        .into_iter()
        .filter_map(|p| match p {
            Permission::Graph(g) => Some(g.to_string()),
            Permission::Arm(_) => None,
        })
        .collect()
}

/// The section of `text` under `heading`, up to the next heading of any level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &text[start + heading.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_readme_grants_exactly_the_graph_permissions_the_code_calls() {
    let readme = std::fs::read_to_string(root().join("infra/README.md")).unwrap();
    let s = section(&readme, "### Graph application permissions");
    // The table: one row per permission, its name in backquotes in the first column.
    let table: BTreeSet<String> = s
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        table,
        graph(),
        "infra/README.md's table vs quell_azure::permissions"
    );
    // The script that grants them.
    let script = &s[s.find("for role in").expect("the grant loop")..];
    let script = &script[..script.find("; do").unwrap()];
    let granted: BTreeSet<String> = script
        .split_whitespace()
        .skip(3)
        .filter(|w| *w != "\\")
        .map(str::to_string)
        .collect();
    assert_eq!(
        granted,
        graph(),
        "the grant loop vs quell_azure::permissions"
    );
}

#[test]
fn the_readme_names_every_arm_action() {
    let readme = std::fs::read_to_string(root().join("infra/README.md")).unwrap();
    let s = section(&readme, "### ARM role");
    for p in handler_permissions() {
        if let Permission::Arm(a) = p {
            assert!(
                s.contains(&format!("`{a}`")),
                "infra/README.md does not name {a}"
            );
        }
    }
}

#[test]
fn the_bicep_gives_the_identity_exactly_its_resource_roles() {
    let bicep = std::fs::read_to_string(root().join("infra/azure/main.bicep")).unwrap();
    // `var roles = { name: 'guid' … }`
    let vars = &bicep[bicep.find("var roles = {").unwrap()..];
    let vars = &vars[..vars.find('}').unwrap()];
    let by_name: Vec<(String, String)> = vars
        .lines()
        .filter_map(|l| l.trim().split_once(": '"))
        .map(|(n, id)| (n.to_string(), id.trim_end_matches('\'').to_string()))
        .collect();
    // Each role assignment to the identity names one of them.
    let assigned: BTreeSet<String> = bicep
        .split("resource ")
        .filter(|r| {
            r.contains("'Microsoft.Authorization/roleAssignments@")
                && r.contains("principalId: identity.properties.principalId")
        })
        .filter_map(|r| {
            by_name
                .iter()
                .find(|(n, _)| r.contains(&format!("roles.{n})")))
                .map(|(_, id)| id.clone())
        })
        .collect();
    let want: BTreeSet<String> = RESOURCE_ROLES
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(assigned, want);
}
