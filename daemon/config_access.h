/* config_access.h -- the `access` section of the config: which peers (by
 * the credentials the kernel gives for a Unix-socket connection) may use
 * the daemon, as which tenant, in which role (docs/operations.md, "Tenants
 * and access").
 *
 *   access:
 *     - { user: alice, tenant: search, role: submit }
 *     - { group: ml-team, tenant: ml, role: submit }
 *     - { uid: 0, role: admin }
 *     - { everyone: true, tenant: default, role: read }
 *
 * Each rule has exactly one matcher (uid, user, gid, group or everyone) and
 * a role; its tenant defaults to `default`. User and group names are
 * resolved when the config is loaded (an unknown name is an error at its
 * position), so a connection is matched by number only. gid and group match
 * the peer's primary group or any of its supplementary groups. The first
 * rule that matches wins; a peer no rule matches is refused. Without the
 * section every peer is admin of the tenant `default`, as before tenants
 * existed. */
#ifndef LOOM_DAEMON_CONFIG_ACCESS_H
#define LOOM_DAEMON_CONFIG_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "daemon/config_tenants.h"
#include "dsl/diag.h"

/* Roles, each allowing what the one before it does and more. */
typedef enum {
    CONFIG_ROLE_READ = 1,      /* get, list, wait, events, stats: its own tenant's */
    CONFIG_ROLE_SUBMIT = 2,    /* read + submit, cancel, retry: its own tenant's */
    CONFIG_ROLE_ADMIN = 3,     /* everything, any tenant; may act for another */
} config_role;

typedef enum {
    CONFIG_MATCH_UID,
    CONFIG_MATCH_GID,
    CONFIG_MATCH_EVERYONE,
} config_match;

typedef struct config_access_rule {
    config_match match;
    unsigned long id;          /* the uid or gid to match */
    char *tenant;              /* owned */
    config_role role;
    int line, col;             /* of the rule, for messages */
} config_access_rule;

typedef struct config_access {
    bool set;                  /* the section is there (even empty: nobody gets in) */
    config_access_rule *rules; /* owned */
    size_t n;
} config_access;

struct dsl_ynode;

/* Parses Y, the value of `access`, into A (empty before), checking each
 * rule's tenant against TENANTS (borrowed: parse `tenants` first). Every
 * problem goes to D at its position. */
void config_access_parse(dsl_diags *d, const struct dsl_ynode *y, const config_tenants *tenants,
                         config_access *a);

void config_access_free(config_access *a);

/* The rule the peer UID, GID with supplementary groups GROUPS (NGROUPS of
 * them; may be NULL) matches first (borrowed), or NULL: refused. A section
 * that is not set matches nobody either: see config_access_resolve. */
const config_access_rule *config_access_match(const config_access *a, uid_t uid, gid_t gid,
                                              const gid_t *groups, size_t ngroups);

/* The role's name ("read", "submit", "admin"). */
const char *config_role_name(config_role r);

#endif
