"""A libcst codemod used by the tests: calls to ``old_api(...)`` become ``newlib.new_api(...)``
imported with ``from newlib import new_api``."""

import libcst as cst
from libcst.codemod import VisitorBasedCodemodCommand
from libcst.codemod.visitors import AddImportsVisitor


class RenameOldApi(VisitorBasedCodemodCommand):
    DESCRIPTION = "Replace old_api() with new_api() from newlib."

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        if isinstance(updated_node.func, cst.Name) and updated_node.func.value == "old_api":
            AddImportsVisitor.add_needed_import(self.context, "newlib", "new_api")
            return updated_node.with_changes(func=cst.Name("new_api"))
        return updated_node
