/* Error case: duplicated rule identifier (yara 4.2.3 rejects this file; so must we). */
rule a { condition: true }
rule a { condition: false }
